#include <elf.h>

#include <algorithm>
#include <map>

#include "ioreq_filter/analysis/elf_module.h"
#include "text_util.h"

namespace iof::analysis {

Result<Module> linkModules(Module driver, std::vector<Module> dependencies) {
  Module& m = driver;
  m.section_origin.resize(m.sections.size());
  m.symbols_by_section_.resize(m.sections.size());
  m.relocations_.resize(m.sections.size());
  // What each dependency exports: its defined global symbols (EXPORT_SYMBOL makes them global).
  std::map<std::string, std::pair<std::uint32_t, std::string>> exported;  // name -> (symbol index in m, module)
  for (Module& dep : dependencies) {
    const auto section_shift = std::uint32_t(m.sections.size());
    const auto symbol_shift = std::uint32_t(m.symbols.size());
    for (Section s : dep.sections) {
      s.index += section_shift;
      if (s.link) s.link += section_shift;
      if (s.info && (s.type == SHT_RELA || s.type == SHT_REL)) s.info += section_shift;
      m.sections.push_back(std::move(s));
      m.section_origin.push_back(dep.name);
    }
    for (Symbol s : dep.symbols) {
      if (s.defined()) s.section += section_shift;
      m.symbols.push_back(std::move(s));
    }
    for (const auto& list : dep.symbols_by_section_) {
      auto& out = m.symbols_by_section_.emplace_back();
      for (auto i : list) out.push_back(i + symbol_shift);
    }
    m.symbols_by_section_.resize(m.sections.size());
    for (const auto& relocs : dep.relocations_) {
      auto& out = m.relocations_.emplace_back();
      for (Relocation r : relocs) {
        r.symbol += symbol_shift;
        out.push_back(r);
      }
    }
    m.relocations_.resize(m.sections.size());
    for (std::uint32_t i = 0; i < dep.symbols.size(); ++i) {
      const Symbol& s = dep.symbols[i];
      if (!s.defined() || s.bind != STB_GLOBAL || s.name.empty()) continue;
      // Every module defines these for the module loader; they are nobody's export, and a second
      // dependency (snd-hda-codec beside snd-hda-core) would otherwise collide on them.
      if (s.name == "__this_module" || s.name == "init_module" || s.name == "cleanup_module") continue;
      auto [it, inserted] = exported.try_emplace(s.name, i + symbol_shift, dep.name);
      if (!inserted)
        return fail(dep.path + ":" + s.name, "exported by both " + it->second.second + ".ko and " + dep.name + ".ko");
    }
    // The sections keep pointing into the dependency's bytes, which stay alive here.
    m.linked_images_.push_back(std::move(dep.image_));
    for (auto&& kept : dep.linked_images_) m.linked_images_.push_back(std::move(kept));
  }
  // Imports become references to the exporting definition. The import keeps its own (untyped) symbol so
  // the definition is not decoded twice as a function.
  for (Symbol& s : m.symbols) {
    if (s.defined() || s.name.empty()) continue;
    auto it = exported.find(s.name);
    if (it == exported.end()) continue;
    const Symbol& def = m.symbols[it->second.first];
    s.section = def.section;
    s.value = def.value;
    s.size = def.size;
    s.type = STT_NOTYPE;
  }
  return driver;
}

}  // namespace iof::analysis
