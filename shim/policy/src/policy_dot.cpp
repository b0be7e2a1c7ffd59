#include <cstdio>
#include <string>

#include "ioreq_filter/policy/policy_json.h"

namespace iof {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"') out += '\\';
    out += c;
  }
  return out;
}

std::string valueLabel(const ValueConstraint& v) {
  char buf[64];
  switch (v.kind) {
    case ValueKind::Any: return "";
    case ValueKind::Exact: std::snprintf(buf, sizeof buf, " =0x%llx", (unsigned long long)v.a); return buf;
    case ValueKind::Mask: std::snprintf(buf, sizeof buf, " &0x%llx=0x%llx", (unsigned long long)v.a, (unsigned long long)v.b); return buf;
    case ValueKind::Range: std::snprintf(buf, sizeof buf, " in[0x%llx,0x%llx]", (unsigned long long)v.a, (unsigned long long)v.b); return buf;
    case ValueKind::Set: return " in{" + std::to_string(v.set.size()) + " values}";
  }
  return "";
}

std::string nodeLabel(const NodeSpec& n, const DevicePolicy& p) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s %s+0x%llx/%u", n.dir == Dir::Read ? "R" : "W", p.regions[n.region].name.c_str(),
                (unsigned long long)n.offset, unsigned(n.size));
  return n.id + "\\n" + buf + valueLabel(n.value);
}

}  // namespace

std::string policyToDot(const DevicePolicy& p) {
  std::string out = "digraph \"" + escape(p.name) + "\" {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n";
  for (std::size_t g = 0; g < p.graphs.size(); ++g) {
    const auto& graph = p.graphs[g];
    for (std::size_t c = 0; c < graph.channels.size(); ++c) {
      const auto& ch = graph.channels[c];
      // Appended piece by piece: GCC 12 -O3 reports a false -Wrestrict on chains of operator+ (GCC PR 105651).
      std::string id = "g";
      id.append(std::to_string(g)).append("c").append(std::to_string(c));
      const std::string prefix = id + "n";
      out.append("  subgraph cluster_").append(id).append(" {\n    label=\"").append(escape(graph.name + " / " + ch.name)).append("\";\n");
      const std::string idle = id + "idle";
      out += "    " + idle + " [label=\"idle\", shape=circle];\n";
      for (std::size_t n = 0; n < ch.nodes.size(); ++n) {
        std::string label = nodeLabel(ch.nodes[n], p);
        for (const auto& l : ch.loops)
          if (l.header == n) label += l.unbounded ? "\\nloop: UNBOUNDED" : "\\nloop ≤ " + std::to_string(l.max_iterations);
        std::string attrs = "label=\"" + escape(label).replace(0, 0, "") + "\"";
        if (ch.nodes[n].reset) attrs += ", style=filled, fillcolor=lightyellow";
        out += "    " + prefix + std::to_string(n) + " [" + attrs + "];\n";
      }
      for (auto e : ch.entries) out += "    " + idle + " -> " + prefix + std::to_string(e) + " [style=bold];\n";
      for (auto e : ch.exits) out += "    " + prefix + std::to_string(e) + " -> " + idle + " [style=dashed];\n";
      for (auto [a, b] : ch.edges) out += "    " + prefix + std::to_string(a) + " -> " + prefix + std::to_string(b) + ";\n";
      out += "  }\n";
    }
    if (!graph.anywhere.empty()) {
      out += "  subgraph cluster_g" + std::to_string(g) + "any {\n    label=\"" + escape(graph.name + " / anywhere (stateless)") + "\";\n";
      for (std::size_t n = 0; n < graph.anywhere.size(); ++n)
        out += "    g" + std::to_string(g) + "a" + std::to_string(n) + " [label=\"" + escape(nodeLabel(graph.anywhere[n], p)) +
               "\", shape=ellipse];\n";
      out += "  }\n";
    }
  }
  out += "}\n";
  return out;
}

}  // namespace iof
