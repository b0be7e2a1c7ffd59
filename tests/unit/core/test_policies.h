// Small policies built in code for engine and bus tests: each test sees exactly the graph it exercises.
#pragma once

#include "ioreq_filter/core/engine.h"
#include "ioreq_filter/core/policy.h"

namespace iof::testing {

inline NodeSpec node(std::string id, std::uint64_t offset, Dir dir, ValueConstraint value = {}, std::uint32_t region = 0) {
  NodeSpec n;
  n.id = std::move(id);
  n.region = region;
  n.offset = offset;
  n.size = 1;
  n.dir = dir;
  n.value = std::move(value);
  return n;
}

inline ValueConstraint exact(std::uint64_t v) { return ValueConstraint{ValueKind::Exact, v, 0, {}}; }
inline ValueConstraint mask(std::uint64_t m, std::uint64_t eq) { return ValueConstraint{ValueKind::Mask, m, eq, {}}; }

// A toy FIFO device at ports 0x100..0x107, modelled on a floppy controller:
//   offset 5 (FIFO): command 0x0a, one parameter (bits 7:3 clear), two result reads, back to idle;
//   offset 4: status read, stateless; offset 2 write with bit 2 clear: reset.
inline DevicePolicy fifoDevice() {
  DevicePolicy p;
  p.name = "toy-fifo";
  p.source = "test";
  p.match.isa_kind = "toy";
  p.regions.push_back(RegionSpec{"io", RegionSpace::Io, -1, 0x100, 8});
  GraphSpec g;
  g.name = "toy";
  ChannelSpec c;
  c.name = "cmd";
  c.nodes = {node("cmd", 5, Dir::Write, exact(0x0a)), node("param", 5, Dir::Write, mask(0xf8, 0)),
             node("r1", 5, Dir::Read), node("r2", 5, Dir::Read)};
  NodeSpec reset = node("reset", 2, Dir::Write, mask(0x04, 0));
  reset.reset = true;
  c.nodes.push_back(reset);
  c.edges = {{0, 1}, {1, 2}, {2, 3}};
  c.entries = {0};
  c.exits = {3, 4};
  g.channels.push_back(c);
  g.anywhere.push_back(node("status", 4, Dir::Read));
  g.anywhere.push_back(node("motor", 2, Dir::Write, mask(0x04, 0x04)));
  p.graphs.push_back(g);
  return p;
}

// fifoDevice() whose parameter may repeat: cmd -> param{1..max} -> r1 -> r2.
inline DevicePolicy loopDevice(std::uint32_t max) {
  DevicePolicy p = fifoDevice();
  auto& c = p.graphs[0].channels[0];
  c.edges.push_back({1, 1});
  c.loops.push_back(LoopSpec{"params", 1, {1}, max, false, {}});
  return p;
}

inline DeviceInstance isaInstance(std::string kind, std::uint64_t base, std::uint64_t length) {
  DeviceInstance d;
  d.name = kind;
  d.kind = std::move(kind);
  d.isa_ports.push_back(PortRange{base, length});
  return d;
}

inline IoRequest pio(std::uint64_t port, Dir dir, std::uint64_t data = 0, std::uint16_t vcpu = 0, std::uint8_t size = 1) {
  IoRequest r;
  r.type = IoType::Pio;
  r.addr = port;
  r.dir = dir;
  r.data = data;
  r.size = size;
  r.vcpu = vcpu;
  return r;
}

inline std::unique_ptr<Engine> makeEngine(DevicePolicy policy, DeviceInstance instance, EngineOptions options = {}) {
  std::vector<BoundDevice> devices;
  devices.push_back(BoundDevice{std::move(instance), std::move(policy)});
  auto e = Engine::create(std::move(devices), options);
  if (!e) throw std::runtime_error(e.error().message());
  return std::move(*e);
}

}  // namespace iof::testing
