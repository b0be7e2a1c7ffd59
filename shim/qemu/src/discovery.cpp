#include "ioreq_filter/qemu/discovery.h"
#include "ioreq_filter/qemu/qemu_instance.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <set>

#include "json_util.h"

namespace iof::qemu {
namespace {

using nlohmann::json;

// QOM objects below these are never devices of interest; skipping them keeps the walk short.
bool skipQomType(std::string_view type) { return type == "memory-region" || type == "irq" || type == "qemu:memory-region"; }
constexpr std::size_t kMaxQomObjects = 4000;

Result<std::uint64_t> number(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) return fail(where, std::string("missing '") + key + "'");
  if (it->is_number_unsigned()) return it->get<std::uint64_t>();
  if (it->is_number_integer()) return std::uint64_t(it->get<std::int64_t>());
  return fail(where, std::string("'") + key + "' is not a number: " + it->dump());
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

Result<void> parsePciBus(const json& bus, std::vector<DeviceInstance>& out, int depth) {
  if (depth > 32) return fail("qmp query-pci", "PCI bridges nested more than 32 deep");
  auto devices = bus.find("devices");
  if (!bus.is_object() || devices == bus.end() || !devices->is_array()) {
    return fail("qmp query-pci", "a bus without a 'devices' array: " + bus.dump().substr(0, 200));
  }
  for (const auto& d : *devices) {
    const std::string where = "qmp query-pci device " + d.dump().substr(0, 120);
    if (!d.is_object()) return fail(where, "not an object");
    DeviceInstance dev;
    auto busno = number(d, "bus", where);
    auto slot = number(d, "slot", where);
    auto fn = number(d, "function", where);
    if (!busno || !slot || !fn) return std::unexpected(!busno ? busno.error() : !slot ? slot.error() : fn.error());
    if (*busno > 255 || *slot > 31 || *fn > 7) return fail(where, "bus/slot/function out of range");
    dev.sbdf = Sbdf{0, std::uint8_t(*busno), std::uint8_t(*slot), std::uint8_t(*fn)};
    auto id = d.find("id");
    auto cls = d.find("class_info");
    if (id == d.end() || !id->is_object() || cls == d.end() || !cls->is_object()) {
      return fail(where, "missing 'id' or 'class_info'");
    }
    PciIdentity ident;
    auto vendor = number(*id, "vendor", where);
    auto device = number(*id, "device", where);
    auto cclass = number(*cls, "class", where);
    if (!vendor || !device || !cclass) return std::unexpected(!vendor ? vendor.error() : !device ? device.error() : cclass.error());
    ident.vendor = std::uint16_t(*vendor);
    ident.device = std::uint16_t(*device);
    // query-pci reports class and subclass only; the prog-if byte is read from config space if possible.
    ident.class_code = std::uint32_t(*cclass & 0xffff) << 8;
    if (auto sv = number(*id, "subsystem-vendor", where)) ident.subsystem_vendor = std::uint16_t(*sv);
    if (auto ss = number(*id, "subsystem", where)) ident.subsystem = std::uint16_t(*ss);
    dev.pci = ident;
    if (auto regions = d.find("regions"); regions != d.end() && regions->is_array()) {
      for (const auto& r : *regions) {
        auto bar = number(r, "bar", where);
        auto size = number(r, "size", where);
        if (!bar || !size) return std::unexpected(!bar ? bar.error() : size.error());
        if (*bar > 5) continue;  // 6 is the expansion ROM
        BarInfo& b = dev.bars[*bar];
        const auto type = jsonString(r, "type");
        if (type == "io") b.kind = BarKind::Io;
        else if (type == "memory") b.kind = jsonBool(r, "mem_type_64") ? BarKind::Mem64 : BarKind::Mem32;
        else return fail(where, "BAR " + std::to_string(*bar) + " has unknown type '" + type + "'");
        b.size = *size;
        // QEMU reports an unassigned BAR as address -1.
        auto addr = number(r, "address", where);
        b.address = addr && *addr != ~std::uint64_t(0) ? *addr : 0;
      }
    }
    out.push_back(std::move(dev));
    if (auto bridge = d.find("pci_bridge"); bridge != d.end() && bridge->is_object()) {
      if (auto sub = bridge->find("devices"); sub != bridge->end()) {
        json inner = {{"devices", *sub}};
        if (auto ok = parsePciBus(inner, out, depth + 1); !ok) return ok;
      }
    }
  }
  return {};
}

struct QomDevice {
  std::string path;
  std::string type;
};

// Breadth-first over child<...> properties from /machine.
Result<std::vector<QomDevice>> walkQom(QmpClient& qmp, const std::set<std::string>& wanted) {
  std::vector<QomDevice> found;
  std::deque<std::string> todo{"/machine"};
  std::size_t visited = 0;
  while (!todo.empty()) {
    const std::string path = todo.front();
    todo.pop_front();
    if (++visited > kMaxQomObjects) return fail("qmp qom-list", "more than 4000 QOM objects under /machine");
    auto props = qmp.execute("qom-list", {{"path", path}});
    if (!props) return std::unexpected(props.error());
    if (!props->is_array()) return fail("qmp qom-list " + path, "reply is not an array");
    for (const auto& p : *props) {
      const std::string type = jsonString(p, "type");
      const std::string name = jsonString(p, "name");
      if (!type.starts_with("child<") || type.size() < 8 || name.empty()) continue;
      const std::string child_type = type.substr(6, type.size() - 7);
      if (skipQomType(child_type)) continue;
      const std::string child = path + "/" + name;
      if (wanted.count(child_type)) found.push_back({child, child_type});
      todo.push_back(child);
    }
  }
  return found;
}

Result<std::set<std::string>> typesImplementing(QmpClient& qmp, const char* interface) {
  auto types = qmp.execute("qom-list-types", {{"implements", interface}, {"abstract", false}});
  if (!types) return std::unexpected(types.error());
  if (!types->is_array()) return fail(std::string("qmp qom-list-types ") + interface, "reply is not an array");
  std::set<std::string> out;
  for (const auto& t : *types) {
    if (t.is_object() && t.contains("name") && t["name"].is_string()) out.insert(t["name"].get<std::string>());
  }
  return out;
}

std::optional<std::uint64_t> qomNumber(QmpClient& qmp, const std::string& path, const char* property) {
  auto v = qmp.execute("qom-get", {{"path", path}, {"property", property}});
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) return v->get<std::uint64_t>();
  if (v->is_number_integer() && v->get<std::int64_t>() >= 0) return std::uint64_t(v->get<std::int64_t>());
  return std::nullopt;
}

// Reads one config dword through CF8/CFC; the caller restores CF8.
std::optional<std::uint32_t> configRead(QtestClient& qtest, Sbdf s, unsigned reg) {
  char cmd[64];
  std::snprintf(cmd, sizeof cmd, "outl 0xcf8 0x%x", 0x80000000u | (unsigned(s.bus) << 16) | (unsigned(s.dev) << 11) |
                                                         (unsigned(s.fn) << 8) | reg);
  auto w = qtest.command(cmd);
  if (!w || !w->ok) return std::nullopt;
  auto r = qtest.command("inl 0xcfc");
  if (!r || !r->ok || !r->value) return std::nullopt;
  return std::uint32_t(*r->value);
}

Result<void> readConfigSpace(QtestClient& qtest, std::vector<DeviceInstance>& devices) {
  auto latch = qtest.command("inl 0xcf8");
  if (!latch) return fail("qtest", "reading the CF8 latch: " + latch.error().error.what);
  if (!latch->ok || !latch->value) return fail("qtest", "reading the CF8 latch: " + latch->text);
  for (auto& d : devices) {
    if (auto cmd = configRead(qtest, d.sbdf, 0x04)) d.command = std::uint16_t(*cmd);
    if (auto rev = configRead(qtest, d.sbdf, 0x08)) d.pci->class_code = *rev >> 8;
    for (unsigned i = 0; i < 6; ++i) {
      if (d.bars[i].kind == BarKind::None) continue;
      auto lo = configRead(qtest, d.sbdf, 0x10 + 4 * i);
      if (!lo) continue;
      std::uint64_t addr = d.bars[i].kind == BarKind::Io ? (*lo & ~0x3u) : (*lo & ~0xfu);
      if (d.bars[i].kind == BarKind::Mem64 && i < 5) {
        if (auto hi = configRead(qtest, d.sbdf, 0x14 + 4 * i)) addr |= std::uint64_t(*hi) << 32;
      }
      d.bars[i].address = addr;
    }
  }
  auto restore = qtest.command("outl 0xcf8 " + hex(*latch->value));
  if (!restore || !restore->ok) return fail("qtest", "restoring the CF8 latch failed");
  return {};
}

}  // namespace

Result<std::vector<DeviceInstance>> parseQueryPci(const json& reply) {
  if (!reply.is_array()) return fail("qmp query-pci", "reply is not an array");
  std::vector<DeviceInstance> out;
  for (const auto& bus : reply) {
    if (auto ok = parsePciBus(bus, out, 0); !ok) return std::unexpected(ok.error());
  }
  return out;
}

Result<std::vector<std::pair<std::string, PortRange>>> parseIoOwners(std::string_view text) {
  std::vector<std::pair<std::string, PortRange>> out;
  bool in_io_view = false;
  bool saw_io = false;
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with("FlatView #")) {
      in_io_view = false;
      continue;
    }
    if (line.starts_with(" AS \"")) {
      if (line.starts_with(" AS \"I/O\"")) in_io_view = saw_io = true;
      continue;
    }
    if (!in_io_view) continue;
    const auto first = line.find_first_not_of(' ');
    if (first == std::string_view::npos || first < 2) continue;
    std::string_view body = line.substr(first);
    const auto dash = body.find('-');
    const auto space = body.find(' ');
    if (dash == std::string_view::npos || space == std::string_view::npos || dash > space) continue;
    unsigned long long lo = 0, hi = 0;
    if (std::sscanf(std::string(body.substr(0, space)).c_str(), "%llx-%llx", &lo, &hi) != 2) continue;
    const auto owner = body.find("owner:{dev path=");
    if (owner == std::string_view::npos) continue;
    const auto start = owner + std::string_view("owner:{dev path=").size();
    const auto end = body.find('}', start);
    if (end == std::string_view::npos || hi < lo) {
      return fail("info mtree line " + std::to_string(line_no), "malformed range line '" + std::string(line) + "'");
    }
    const std::string path(body.substr(start, end - start));
    if (!out.empty() && out.back().first == path && out.back().second.base + out.back().second.length == lo) {
      out.back().second.length += hi - lo + 1;
    } else {
      out.push_back({path, PortRange{lo, hi - lo + 1}});
    }
  }
  if (!saw_io) return fail("info mtree", "no flat view of the \"I/O\" address space in the output");
  return out;
}

Result<std::vector<DeviceInstance>> discoverDevices(QmpClient& qmp, QtestClient* qtest) {
  auto pci_reply = qmp.execute("query-pci");
  if (!pci_reply) return std::unexpected(pci_reply.error());
  auto pci = parseQueryPci(*pci_reply);
  if (!pci) return std::unexpected(pci.error());

  auto pci_types = typesImplementing(qmp, "pci-device");
  if (!pci_types) return std::unexpected(pci_types.error());
  auto isa_types = typesImplementing(qmp, "isa-device");
  if (!isa_types) return std::unexpected(isa_types.error());
  std::set<std::string> wanted = *pci_types;
  wanted.insert(isa_types->begin(), isa_types->end());
  auto qom = walkQom(qmp, wanted);
  if (!qom) return std::unexpected(qom.error());

  // PCI: a QOM device's `addr` property is its devfn. Before firmware runs, every bus behind a bridge
  // is still numbered 0, so only bus-0 devices are matched by devfn; others keep a vendor:device kind.
  std::map<unsigned, std::string> kind_by_devfn;
  for (const auto& o : *qom) {
    if (!pci_types->count(o.type)) continue;
    if (auto devfn = qomNumber(qmp, o.path, "addr"); devfn && *devfn < 256) {
      if (!kind_by_devfn.count(unsigned(*devfn))) kind_by_devfn[unsigned(*devfn)] = o.type;
    }
  }
  for (auto& d : *pci) {
    const unsigned devfn = unsigned(d.sbdf.dev) << 3 | d.sbdf.fn;
    auto it = d.sbdf.bus == 0 ? kind_by_devfn.find(devfn) : kind_by_devfn.end();
    char fallback[32];
    std::snprintf(fallback, sizeof fallback, "pci-%04x:%04x", d.pci->vendor, d.pci->device);
    d.kind = it != kind_by_devfn.end() ? it->second : fallback;
    char loc[16];
    std::snprintf(loc, sizeof loc, "%02x:%02x.%x", d.sbdf.bus, d.sbdf.dev, d.sbdf.fn);
    d.name = d.kind + "@" + loc;
  }
  if (qtest) {
    if (auto ok = readConfigSpace(*qtest, *pci); !ok) return std::unexpected(ok.error());
  }

  auto mtree = qmp.execute("human-monitor-command", {{"command-line", "info mtree -f -o"}});
  if (!mtree) return std::unexpected(mtree.error());
  if (!mtree->is_string()) return fail("qmp human-monitor-command", "'info mtree' reply is not a string");
  auto owners = parseIoOwners(mtree->get<std::string>());
  if (!owners) return std::unexpected(owners.error());

  std::vector<DeviceInstance> isa;
  for (const auto& o : *qom) {
    if (!isa_types->count(o.type)) continue;
    DeviceInstance d;
    d.kind = o.type;
    for (const auto& [path, range] : *owners) {
      if (path == o.path) d.isa_ports.push_back(range);
    }
    if (d.isa_ports.empty()) continue;  // decodes no ports (or another device shadows them all)
    std::sort(d.isa_ports.begin(), d.isa_ports.end(), [](auto& a, auto& b) { return a.base < b.base; });
    const auto iobase = qomNumber(qmp, o.path, "iobase");
    // The first range starts at the device's iobase even where QEMU leaves the lowest ports of the
    // block undecoded (isa-fdc: 0x3f0): policies place their fixed regions relative to that base.
    auto& first = d.isa_ports.front();
    if (iobase && *iobase < first.base && first.base - *iobase < 8) {
      first.length += first.base - *iobase;
      first.base = *iobase;
    }
    d.name = d.kind + "@" + hex(iobase ? *iobase : first.base);
    isa.push_back(std::move(d));
  }
  std::sort(isa.begin(), isa.end(), [](auto& a, auto& b) { return a.isa_ports.front().base < b.isa_ports.front().base; });
  std::vector<DeviceInstance> out = std::move(*pci);
  for (auto& d : isa) out.push_back(std::move(d));
  return out;
}

Result<std::vector<DeviceInstance>> discoverMachine(const std::vector<std::string>& machine_args) {
  LaunchOptions launch;
  launch.machine_args = machine_args;
  auto q = QemuInstance::launch(launch);
  if (!q) return std::unexpected(q.error());
  auto devices = discoverDevices((*q)->qmp(), &(*q)->qtest());
  (*q)->shutdown();
  return devices;
}

}  // namespace iof::qemu
