//! Kernel modules: index a `/lib/modules/<release>` tree, read each module's `.modinfo`, and
//! compute the dependency closure of the requested drivers in load order.
//!
//! Debian's kernel packages ship no `modules.dep` (depmod runs at install time), so the
//! dependencies come from the `depends=` field the kernel build writes into every `.ko`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::BuildError;

/// Name under which the kernel knows a module: the file stem with `-` turned into `_`.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules of one kernel release.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    root: PathBuf,
    release: String,
    modules: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// A module chosen for the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    /// Canonical module name.
    pub name: String,
    /// Path relative to the modules directory (`kernel/drivers/net/virtio_net.ko`).
    pub rel_path: PathBuf,
    /// Canonical names of the modules it depends on.
    pub depends: Vec<String>,
    /// Its PCI device patterns (`alias=pci:…`), in `.modinfo` order.
    pub pci_aliases: Vec<String>,
}

/// The result of [`ModuleIndex::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Modules to carry, dependencies before dependents.
    pub order: Vec<ResolvedModule>,
    /// Requested names that are built into the kernel.
    pub builtin: Vec<String>,
}

impl ModuleIndex {
    /// Scans `modules_dir` (`/lib/modules/<release>`): every `.ko` file below `kernel/` (or
    /// anywhere below the directory) and the `modules.builtin` list.
    pub fn scan(modules_dir: &Path) -> Result<Self, BuildError> {
        let release = modules_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut modules = BTreeMap::new();
        let mut stack = vec![modules_dir.to_owned()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| BuildError::io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| BuildError::io(&dir, e))?;
                let path = entry.path();
                let ft = entry.file_type().map_err(|e| BuildError::io(&path, e))?;
                if ft.is_dir() {
                    stack.push(path);
                } else if let Some(stem) = module_stem(&path) {
                    let rel = path.strip_prefix(modules_dir).unwrap_or(&path).to_owned();
                    modules.insert(canonical_name(stem), rel);
                }
            }
        }
        let builtin = match std::fs::read_to_string(modules_dir.join("modules.builtin")) {
            Ok(text) => text
                .lines()
                .filter_map(|l| module_stem(Path::new(l)))
                .map(canonical_name)
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        if modules.is_empty() && builtin.is_empty() {
            return Err(BuildError::Kernel(format!(
                "{} holds no kernel modules; point kernel.modules_dir at /lib/modules/<release>",
                modules_dir.display()
            )));
        }
        Ok(Self {
            root: modules_dir.to_owned(),
            release,
            modules,
            builtin,
        })
    }

    /// Kernel release this index belongs to (the directory name).
    pub fn release(&self) -> &str {
        &self.release
    }

    /// The modules directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of loadable modules found.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether no loadable modules were found.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Resolves the requested modules and everything they depend on (`depends=` and
    /// `softdep=pre:`), returning them dependencies-first. Unknown names are an error that
    /// suggests the closest known name.
    pub fn resolve(&self, wanted: &[String]) -> Result<Closure, BuildError> {
        let mut closure = Closure::default();
        let mut info: BTreeMap<String, ResolvedModule> = BTreeMap::new();
        let mut queue: Vec<String> = Vec::new();
        for w in wanted {
            let name = canonical_name(w);
            if self.modules.contains_key(&name) {
                queue.push(name);
            } else if self.builtin.contains(&name) {
                if !closure.builtin.contains(&name) {
                    closure.builtin.push(name);
                }
            } else {
                return Err(BuildError::UnknownModule {
                    name: w.clone(),
                    release: self.release.clone(),
                    suggestion: self.closest(&name),
                });
            }
        }
        while let Some(name) = queue.pop() {
            if info.contains_key(&name) {
                continue;
            }
            let rel = self.modules[&name].clone();
            let path = self.root.join(&rel);
            let data = std::fs::read(&path).map_err(|e| BuildError::io(&path, e))?;
            let mi = modinfo(&data)
                .map_err(|m| BuildError::Kernel(format!("{}: {m}", path.display())))?;
            let mut depends = Vec::new();
            for dep in mi.depends.iter().chain(mi.softdep_pre.iter()) {
                let dep = canonical_name(dep);
                if self.modules.contains_key(&dep) {
                    depends.push(dep.clone());
                    queue.push(dep);
                } else if !self.builtin.contains(&dep)
                    && mi.depends.iter().any(|d| canonical_name(d) == dep)
                {
                    return Err(BuildError::Kernel(format!(
                        "module {name} depends on {dep}, which is not in {}; the kernel's modules are incomplete",
                        self.root.display()
                    )));
                }
            }
            depends.sort();
            depends.dedup();
            info.insert(
                name.clone(),
                ResolvedModule {
                    name,
                    rel_path: rel,
                    depends,
                    pci_aliases: mi
                        .aliases
                        .iter()
                        .filter(|a| a.starts_with("pci:"))
                        .cloned()
                        .collect(),
                },
            );
        }
        // Depth-first post-order over sorted names: deterministic, dependencies first.
        let mut done = BTreeSet::new();
        let mut visiting = BTreeSet::new();
        for name in info.keys() {
            visit(name, &info, &mut done, &mut visiting, &mut closure.order);
        }
        Ok(closure)
    }

    fn closest(&self, name: &str) -> Option<String> {
        self.modules
            .keys()
            .chain(self.builtin.iter())
            .map(|k| (edit_distance(name, k), k))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, k)| k.clone())
    }

    /// Renders a `modules.dep` for the chosen modules (the format kmod and BusyBox `modprobe`
    /// read), with paths relative to the modules directory.
    pub fn modules_dep(closure: &Closure) -> String {
        let paths: BTreeMap<&str, String> = closure
            .order
            .iter()
            .map(|m| (m.name.as_str(), m.rel_path.to_string_lossy().into_owned()))
            .collect();
        let mut out = String::new();
        for m in &closure.order {
            out.push_str(&paths[m.name.as_str()]);
            out.push(':');
            // kmod lists all transitive dependencies, the deepest last.
            let mut all = Vec::new();
            collect_deps(&m.name, closure, &mut all);
            for d in all.iter().rev() {
                out.push(' ');
                out.push_str(&paths[d.as_str()]);
            }
            out.push('\n');
        }
        out
    }
}

fn collect_deps(name: &str, closure: &Closure, out: &mut Vec<String>) {
    // `order` is dependencies-first, so walking it backwards visits dependents before
    // dependencies; collect the transitive set in that order.
    let by_name: BTreeMap<&str, &ResolvedModule> =
        closure.order.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut want: BTreeSet<&str> = BTreeSet::new();
    let mut stack = vec![name];
    while let Some(n) = stack.pop() {
        if let Some(m) = by_name.get(n) {
            for d in &m.depends {
                if want.insert(d.as_str()) {
                    stack.push(d.as_str());
                }
            }
        }
    }
    for m in &closure.order {
        if want.contains(m.name.as_str()) {
            out.push(m.name.clone());
        }
    }
}

fn visit(
    name: &str,
    info: &BTreeMap<String, ResolvedModule>,
    done: &mut BTreeSet<String>,
    visiting: &mut BTreeSet<String>,
    order: &mut Vec<ResolvedModule>,
) {
    if done.contains(name) || !visiting.insert(name.to_owned()) {
        return; // already placed, or a dependency cycle (the kernel forbids them): stop here
    }
    if let Some(m) = info.get(name) {
        for d in &m.depends {
            visit(d, info, done, visiting, order);
        }
        order.push(m.clone());
    }
    visiting.remove(name);
    done.insert(name.to_owned());
}

fn module_stem(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".ko")
        .or_else(|| name.strip_suffix(".ko.zst"))
}

/// Fields of a module's `.modinfo` section that matter for the closure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `depends=`: hard dependencies.
    pub depends: Vec<String>,
    /// `softdep=pre: …`: modules to load first when present.
    pub softdep_pre: Vec<String>,
    /// `alias=`: the device patterns the module serves (`pci:v00001AF4d*…`, `fs-vfat`).
    pub aliases: Vec<String>,
}

/// Reads the `.modinfo` section of a module (`.ko`, or `.ko.zst` bytes).
pub fn modinfo(data: &[u8]) -> Result<ModInfo, String> {
    use object::{Object, ObjectSection};
    let decompressed;
    let data = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        decompressed =
            zstd::stream::decode_all(data).map_err(|e| format!("bad zstd module: {e}"))?;
        &decompressed[..]
    } else {
        data
    };
    let file = object::File::parse(data).map_err(|e| format!("not an ELF module: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?;
    let bytes = section
        .data()
        .map_err(|e| format!("unreadable .modinfo: {e}"))?;
    Ok(parse_modinfo(bytes))
}

/// Parses the NUL-separated `key=value` strings of a `.modinfo` section.
pub fn parse_modinfo(bytes: &[u8]) -> ModInfo {
    let mut mi = ModInfo::default();
    for field in bytes.split(|b| *b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        if let Some(alias) = field.strip_prefix("alias=") {
            mi.aliases.push(alias.to_owned());
        } else if let Some(deps) = field.strip_prefix("depends=") {
            mi.depends
                .extend(deps.split(',').filter(|d| !d.is_empty()).map(str::to_owned));
        } else if let Some(soft) = field.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut in_pre = false;
            for word in soft.split_whitespace() {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    w if in_pre => mi.softdep_pre.push(w.to_owned()),
                    _ => {}
                }
            }
        }
    }
    mi
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a minimal ELF relocatable file with a `.modinfo` section, like a real `.ko`.
    fn fake_ko(fields: &[&str]) -> Vec<u8> {
        use object::write::Object;
        use object::{Architecture, BinaryFormat, Endianness, SectionKind};
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let id = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        let mut data = Vec::new();
        for f in fields {
            data.extend_from_slice(f.as_bytes());
            data.push(0);
        }
        obj.append_section_data(id, &data, 1);
        obj.write().unwrap()
    }

    fn tree(mods: &[(&str, &[&str])], builtin: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("6.1.0-test");
        std::fs::create_dir_all(root.join("kernel/drivers")).unwrap();
        for (name, fields) in mods {
            std::fs::write(
                root.join(format!("kernel/drivers/{name}.ko")),
                fake_ko(fields),
            )
            .unwrap();
        }
        let b: String = builtin
            .iter()
            .map(|b| format!("kernel/x/{b}.ko\n"))
            .collect();
        std::fs::write(root.join("modules.builtin"), b).unwrap();
        dir
    }

    #[test]
    fn parses_modinfo_fields() {
        let mi = parse_modinfo(
            b"license=GPL\0depends=virtio,virtio_ring\0softdep=pre: crc32c post: x\0",
        );
        assert_eq!(mi.depends, vec!["virtio", "virtio_ring"]);
        assert_eq!(mi.softdep_pre, vec!["crc32c"]);
        assert_eq!(parse_modinfo(b"depends=\0"), ModInfo::default());
        let mi = parse_modinfo(b"alias=pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*\0alias=fs-vfat\0");
        assert_eq!(
            mi.aliases,
            vec!["pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*", "fs-vfat"]
        );
    }

    #[test]
    fn resolved_modules_carry_their_pci_patterns_only() {
        let d = tree(
            &[(
                "ena",
                &[
                    "alias=pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*",
                    "alias=net-pf-99",
                    "depends=",
                ],
            )],
            &[],
        );
        let idx = ModuleIndex::scan(&d.path().join("6.1.0-test")).unwrap();
        let c = idx.resolve(&["ena".into()]).unwrap();
        assert_eq!(
            c.order[0].pci_aliases,
            vec!["pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*"]
        );
    }

    #[test]
    fn closure_orders_dependencies_first() {
        let d = tree(
            &[
                ("virtio_net", &["depends=net_failover,virtio,virtio_ring"]),
                ("net_failover", &["depends=failover"]),
                ("failover", &["depends="]),
                ("virtio", &["depends="]),
                ("virtio_ring", &["depends=virtio"]),
                ("unrelated", &["depends="]),
            ],
            &["unix"],
        );
        let idx = ModuleIndex::scan(&d.path().join("6.1.0-test")).unwrap();
        assert_eq!(idx.release(), "6.1.0-test");
        let c = idx.resolve(&["virtio-net".into(), "unix".into()]).unwrap();
        let names: Vec<&str> = c.order.iter().map(|m| m.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert!(pos("virtio") < pos("virtio_ring"));
        assert!(pos("virtio_ring") < pos("virtio_net"));
        assert!(!names.contains(&"unrelated"));
        assert_eq!(c.builtin, vec!["unix"]);
        // Resolution is deterministic.
        assert_eq!(
            idx.resolve(&["virtio_net".into(), "unix".into()]).unwrap(),
            c
        );
    }

    #[test]
    fn modules_dep_lists_transitive_dependencies() {
        let d = tree(
            &[("a", &["depends=b"]), ("b", &["depends=c"]), ("c", &[])],
            &[],
        );
        let idx = ModuleIndex::scan(&d.path().join("6.1.0-test")).unwrap();
        let c = idx.resolve(&["a".into()]).unwrap();
        let dep = ModuleIndex::modules_dep(&c);
        assert!(
            dep.contains("kernel/drivers/a.ko: kernel/drivers/b.ko kernel/drivers/c.ko\n"),
            "{dep}"
        );
        assert!(dep.contains("kernel/drivers/c.ko:\n"), "{dep}");
    }

    #[test]
    fn unknown_module_suggests_a_fix() {
        let d = tree(&[("virtio_net", &[])], &[]);
        let idx = ModuleIndex::scan(&d.path().join("6.1.0-test")).unwrap();
        let err = idx
            .resolve(&["virtio_nett".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("virtio_nett"), "{err}");
        assert!(err.contains("did you mean `virtio_net`"), "{err}");
        let err = idx.resolve(&["zzzzzz".into()]).unwrap_err().to_string();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn missing_hard_dependency_is_an_error() {
        let d = tree(&[("a", &["depends=ghost"])], &[]);
        let idx = ModuleIndex::scan(&d.path().join("6.1.0-test")).unwrap();
        assert!(
            idx.resolve(&["a".into()])
                .unwrap_err()
                .to_string()
                .contains("ghost")
        );
    }

    #[test]
    fn missing_soft_dependency_is_ignored() {
        let d = tree(&[("a", &["softdep=pre: ghost"])], &[]);
        let idx = ModuleIndex::scan(&d.path().join("6.1.0-test")).unwrap();
        assert_eq!(idx.resolve(&["a".into()]).unwrap().order.len(), 1);
    }

    #[test]
    fn empty_dir_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        assert!(ModuleIndex::scan(d.path()).is_err());
    }

    #[test]
    fn not_elf_is_an_error() {
        assert!(modinfo(b"not an elf").is_err());
    }

    proptest::proptest! {
        #[test]
        fn modinfo_parser_is_total(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_modinfo(&bytes);
            let _ = modinfo(&bytes);
        }
    }
}
