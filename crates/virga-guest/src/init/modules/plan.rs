//! Which module loads next: dependencies first, what a stage waits for before the rest, and
//! only drivers that may drive a device here count for a wait.

use boot_contract::ModuleEntry;

use super::Class;
use super::pci::glob_match;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    Pending,
    Loading,
    Loaded,
    Failed(String),
}

/// Whether the slot's verified `/usr` is mounted, for the modules that live there (a disk
/// image keeps only what mounting it needs in the initramfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Usr {
    /// Not yet: modules under `/usr` wait.
    Waiting,
    /// Mounted: they load.
    Mounted,
    /// It did not mount: they fail with this reason.
    Failed(String),
}

/// Which module can be loaded next, given what has loaded so far and what stages wait for.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) entries: Vec<ModuleEntry>,
    pub(super) class: Vec<Class>,
    pub(super) state: Vec<State>,
    /// Load order when nobody waits: the best (lowest) class rank among the module and every
    /// module that depends on it, so dependencies inherit their users' urgency.
    pub(super) rank: Vec<Class>,
    /// Some stage waits for it (or for a module that needs it): load it before the rest.
    pub(super) wanted: Vec<bool>,
    /// It may be needed on this machine: a driver whose PCI patterns match a device on the bus,
    /// a module without PCI patterns, or a library a relevant module uses. Stages wait only
    /// for these (and their dependencies); the others (drivers for other clouds' hardware) load
    /// in the background, for hot-plug.
    pub(super) relevant: Vec<bool>,
    /// Indices of each module's dependencies that are in the list (others are built in or
    /// already loaded).
    pub(super) deps: Vec<Vec<usize>>,
    /// The thread loading it, while it loads.
    pub(super) loader_tid: Vec<Option<i32>>,
    /// Worker threads running.
    pub(super) live: usize,
    /// Whether the first worker has started the others.
    pub(super) helpers: bool,
    /// The slot's `/usr`, where the modules not needed to mount it live.
    pub(super) usr: Usr,
}

/// Whether the module at `path` is in the slot's `/usr` (loadable once it is mounted).
fn in_slot(path: &str) -> bool {
    path.starts_with(boot_contract::SLOT_MODULES_PREFIX)
}

impl Plan {
    /// A plan for `entries` on a machine whose PCI devices have these `modalias` values
    /// (`None`: no PCI bus to ask, every driver may be needed).
    pub(super) fn new(entries: Vec<ModuleEntry>, pci_devices: Option<&[String]>) -> Self {
        let class: Vec<Class> = entries.iter().map(|e| Class::of(&e.path)).collect();
        let n = entries.len();
        let index = |name: &str| entries.iter().position(|e| e.name == name);
        let deps: Vec<Vec<usize>> = entries
            .iter()
            .map(|e| e.depends.iter().filter_map(|d| index(d)).collect())
            .collect();
        let matches = |e: &ModuleEntry| {
            pci_devices
                .is_none_or(|devs| e.pci.iter().any(|p| devs.iter().any(|d| glob_match(p, d))))
        };
        // A driver with PCI patterns is relevant when one matches; one without is relevant,
        // unless it is a library other modules use (libata, scsi_mod, virtio_ring): then it is
        // relevant when one of its users is.
        let mut is_library = vec![false; n];
        for &d in deps.iter().flatten() {
            is_library[d] = true;
        }
        let mut relevant: Vec<bool> = entries
            .iter()
            .zip(&is_library)
            .map(|(e, &lib)| if e.pci.is_empty() { !lib } else { matches(e) })
            .collect();
        loop {
            let mut changed = false;
            for i in 0..n {
                for &d in &deps[i] {
                    if relevant[i] && !relevant[d] && entries[d].pci.is_empty() {
                        relevant[d] = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut plan = Self {
            deps,
            state: vec![State::Pending; n],
            rank: class.clone(),
            wanted: vec![false; n],
            relevant,
            loader_tid: vec![None; n],
            live: 0,
            helpers: false,
            usr: Usr::Waiting,
            class,
            entries,
        };
        // Propagate ranks to dependencies until nothing changes (the graph is small).
        loop {
            let mut changed = false;
            for i in 0..n {
                for &d in &plan.deps[i] {
                    if plan.rank[i] < plan.rank[d] {
                        plan.rank[d] = plan.rank[i];
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        plan
    }

    #[cfg(test)]
    fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// Marks every module of `classes` that may drive a device here, and what they depend
    /// on, as wanted.
    pub(super) fn want(&mut self, classes: &[Class]) {
        let mut stack: Vec<usize> = (0..self.entries.len())
            .filter(|&i| classes.contains(&self.class[i]) && self.relevant[i])
            .collect();
        while let Some(i) = stack.pop() {
            if !self.wanted[i] {
                self.wanted[i] = true;
                // Already loading in the background: somebody waits for it now.
                if let Some(tid) = self.loader_tid[i] {
                    let _ = crate::sys::set_background(tid, false);
                }
                stack.extend(&self.deps[i]);
            }
        }
    }

    /// Modules of `classes` a stage waits for that have not finished (loaded or failed) yet.
    pub(super) fn unfinished(&self, classes: &[Class]) -> Vec<&str> {
        (0..self.entries.len())
            .filter(|&i| classes.contains(&self.class[i]))
            .filter(|&i| self.relevant[i] || self.wanted[i])
            .filter(|&i| matches!(self.state[i], State::Pending | State::Loading))
            .map(|i| self.entries[i].name.as_str())
            .collect()
    }

    /// The next module to load: wanted ones first, then by rank, then in list order. Pending
    /// modules with a failed dependency are marked failed on the way.
    pub(super) fn next(&mut self) -> Option<usize> {
        loop {
            let mut changed = false;
            let mut best: Option<usize> = None;
            for i in 0..self.entries.len() {
                if self.state[i] != State::Pending {
                    continue;
                }
                if in_slot(&self.entries[i].path) {
                    match &self.usr {
                        Usr::Mounted => {}
                        Usr::Waiting => continue,
                        Usr::Failed(why) => {
                            self.state[i] =
                                State::Failed(format!("in /usr, which did not mount: {why}"));
                            changed = true;
                            continue;
                        }
                    }
                }
                let mut ready = true;
                for &d in &self.deps[i] {
                    match &self.state[d] {
                        State::Loaded => {}
                        State::Failed(_) => {
                            let why = format!("dependency {} failed", self.entries[d].name);
                            self.state[i] = State::Failed(why);
                            changed = true;
                            ready = false;
                            break;
                        }
                        State::Pending | State::Loading => ready = false,
                    }
                }
                let key = |j: usize| (!self.wanted[j], self.rank[j]);
                if ready && best.is_none_or(|b| key(i) < key(b)) {
                    best = Some(i);
                }
            }
            if let Some(i) = best {
                self.state[i] = State::Loading;
                return Some(i);
            }
            if !changed {
                return None;
            }
        }
    }

    /// Pending modules some stage waits for whose dependencies have all loaded.
    pub(super) fn runnable_wanted(&self) -> usize {
        (0..self.entries.len())
            .filter(|&i| self.state[i] == State::Pending && self.wanted[i])
            .filter(|&i| self.deps[i].iter().all(|&d| self.state[d] == State::Loaded))
            .count()
    }

    pub(super) fn busy(&self) -> bool {
        self.state.contains(&State::Loading)
    }

    /// Modules wait for `/usr` to be mounted (workers stay for them).
    pub(super) fn held(&self) -> bool {
        self.usr == Usr::Waiting
            && self
                .entries
                .iter()
                .zip(&self.state)
                .any(|(e, st)| *st == State::Pending && in_slot(&e.path))
    }

    /// Modules nothing here needs: drivers whose PCI patterns match no device, and the
    /// libraries only they use.
    pub(super) fn without_device(&self) -> Vec<&str> {
        (0..self.entries.len())
            .filter(|&i| !self.relevant[i])
            .map(|i| self.entries[i].name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::modules::pci::tests::{PIIX_IDE, Q35_AHCI, VIRTIO_NET};

    fn plan(entries: Vec<ModuleEntry>) -> Plan {
        Plan::new(entries, None)
    }

    fn entry(name: &str, deps: &[&str]) -> ModuleEntry {
        entry_at(name, &format!("/{name}.ko"), deps)
    }

    fn entry_at(name: &str, path: &str, deps: &[&str]) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            path: path.into(),
            depends: deps.iter().map(|d| d.to_string()).collect(),
            pci: Vec::new(),
        }
    }

    const K: &str = "/lib/modules/6.1.0-1-cloud-amd64/kernel";

    #[test]
    fn independent_modules_are_ready_together() {
        let mut p = plan(vec![
            entry("a", &[]),
            entry("b", &[]),
            entry("c", &["a", "b"]),
        ]);
        assert_eq!(p.next(), Some(0));
        assert_eq!(p.next(), Some(1));
        assert_eq!(p.next(), None, "c waits for a and b");
        assert!(p.busy());
        p.state[0] = State::Loaded;
        assert_eq!(p.next(), None);
        p.state[1] = State::Loaded;
        assert_eq!(p.next(), Some(2));
    }

    #[test]
    fn failure_propagates_to_dependents() {
        let mut p = plan(vec![
            entry("a", &[]),
            entry("b", &["a"]),
            entry("c", &["b"]),
        ]);
        assert_eq!(p.next(), Some(0));
        p.state[0] = State::Failed("boom".into());
        assert_eq!(p.next(), None);
        assert_eq!(p.state[1], State::Failed("dependency a failed".into()));
        assert_eq!(p.state[2], State::Failed("dependency b failed".into()));
        assert!(!p.busy());
    }

    #[test]
    fn unknown_dependencies_are_treated_as_present() {
        let mut p = plan(vec![entry("a", &["builtin_thing"])]);
        assert_eq!(p.next(), Some(0));
    }

    #[test]
    fn classes_come_from_the_kernel_tree() {
        for (path, class) in [
            ("drivers/net/virtio_net.ko", Class::Net),
            ("net/core/failover.ko", Class::Net),
            ("drivers/ata/ata_piix.ko", Class::Storage),
            ("drivers/scsi/sr_mod.ko", Class::Storage),
            ("drivers/block/virtio_blk.ko", Class::Storage),
            ("drivers/cdrom/cdrom.ko", Class::Storage),
            ("drivers/input/evdev.ko", Class::Input),
            ("drivers/acpi/button.ko", Class::Acpi),
            ("drivers/char/hw_random/virtio-rng.ko", Class::Rng),
            ("drivers/virtio/virtio_pci.ko", Class::Bus),
            ("fs/isofs/isofs.ko", Class::Fs),
            ("drivers/char/virtio_console.ko", Class::Other),
            ("net/8021q/8021q.ko", Class::NetStack),
            ("net/802/garp.ko", Class::NetStack),
            ("drivers/net/bonding/bonding.ko", Class::NetStack),
        ] {
            assert_eq!(Class::of(&format!("{K}/{path}")), class, "{path}");
        }
        assert_eq!(Class::of("/x.ko"), Class::Other);
    }

    /// The default image's shape: the power button first, storage and network drivers before
    /// filesystems, and the libraries under them as urgent as their users.
    fn default_like() -> Plan {
        plan(vec![
            entry_at("isofs", &format!("{K}/fs/isofs/isofs.ko"), &[]),
            entry_at("scsi_mod", &format!("{K}/drivers/scsi/scsi_mod.ko"), &[]),
            entry_at(
                "libata",
                &format!("{K}/drivers/ata/libata.ko"),
                &["scsi_mod"],
            ),
            entry_at(
                "ata_piix",
                &format!("{K}/drivers/ata/ata_piix.ko"),
                &["libata"],
            ),
            entry_at("virtio", &format!("{K}/drivers/virtio/virtio.ko"), &[]),
            entry_at(
                "virtio_net",
                &format!("{K}/drivers/net/virtio_net.ko"),
                &["virtio"],
            ),
            entry_at("button", &format!("{K}/drivers/acpi/button.ko"), &[]),
        ])
    }

    /// A disk image's plan: virtio and dm-verity in the initramfs, the network driver and the
    /// power button in the slot's /usr.
    fn disk_like() -> Plan {
        const U: &str = "/usr/lib/modules/6.1.0-1-cloud-amd64/kernel";
        plan(vec![
            entry_at("virtio", &format!("{K}/drivers/virtio/virtio.ko"), &[]),
            entry_at("dm_verity", &format!("{K}/drivers/md/dm-verity.ko"), &[]),
            entry_at(
                "virtio_net",
                &format!("{U}/drivers/net/virtio_net.ko"),
                &["virtio"],
            ),
            entry_at("button", &format!("{U}/drivers/acpi/button.ko"), &[]),
        ])
    }

    fn drain(p: &mut Plan) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(i) = p.next() {
            p.state[i] = State::Loaded;
            out.push(p.entries[i].name.clone());
        }
        out
    }

    #[test]
    fn modules_in_the_slot_wait_for_usr() {
        let mut p = disk_like();
        let mut first = drain(&mut p);
        first.sort();
        assert_eq!(first, ["dm_verity", "virtio"]);
        // Nothing runnable, nothing loading, but the workers must stay.
        assert!(!p.busy());
        assert!(p.held());
        p.usr = Usr::Mounted;
        assert!(!p.held());
        let mut rest = drain(&mut p);
        rest.sort();
        assert_eq!(rest, ["button", "virtio_net"]);
    }

    #[test]
    fn modules_in_the_slot_fail_when_usr_does_not_mount() {
        let mut p = disk_like();
        drain(&mut p);
        p.usr = Usr::Failed("bad hash".into());
        assert!(!p.held());
        assert_eq!(p.next(), None);
        let i = p.index("virtio_net").unwrap();
        assert!(
            matches!(&p.state[i], State::Failed(w) if w.contains("bad hash")),
            "{:?}",
            p.state[i]
        );
        assert!(p.unfinished(&[Class::Net, Class::Acpi]).is_empty());
    }

    #[test]
    fn without_a_slot_nothing_is_held() {
        let mut p = default_like();
        drain(&mut p);
        assert!(!p.held());
    }

    #[test]
    fn urgent_classes_and_their_dependencies_go_first() {
        let mut p = default_like();
        let name = |p: &Plan, i: Option<usize>| i.map(|i| p.entries[i].name.clone());
        // button (input), then virtio: a dependency of virtio_net ranks as network.
        let first = p.next();
        assert_eq!(name(&p, first).as_deref(), Some("button"));
        let second = p.next();
        assert_eq!(name(&p, second).as_deref(), Some("virtio"));
        let third = p.next();
        assert_eq!(name(&p, third).as_deref(), Some("scsi_mod"));
        let fourth = p.next();
        assert_eq!(name(&p, fourth).as_deref(), Some("isofs"));
    }

    #[test]
    fn waiting_promotes_a_class_and_its_dependencies() {
        let mut p = default_like();
        p.want(&[Class::Fs]);
        assert_eq!(
            p.next().map(|i| p.entries[i].name.clone()).as_deref(),
            Some("isofs")
        );
        let mut p = default_like();
        p.want(&[Class::Storage]);
        assert!(p.wanted[p.index("scsi_mod").unwrap()]);
        assert!(!p.wanted[p.index("virtio").unwrap()]);
        assert_eq!(
            p.unfinished(&[Class::Storage]),
            ["scsi_mod", "libata", "ata_piix"]
        );
        assert_eq!(
            p.next().map(|i| p.entries[i].name.clone()).as_deref(),
            Some("scsi_mod")
        );
        assert!(p.unfinished(&[Class::Acpi]) == ["button"]);
    }

    #[test]
    fn stages_wait_only_for_drivers_of_devices_that_are_here() {
        let with_pci = |name: &str, path: &str, deps: &[&str], pci: &[&str]| ModuleEntry {
            pci: pci.iter().map(|p| p.to_string()).collect(),
            ..entry_at(name, &format!("{K}/{path}"), deps)
        };
        let entries = vec![
            with_pci("scsi_mod", "drivers/scsi/scsi_mod.ko", &[], &[]),
            with_pci("libata", "drivers/ata/libata.ko", &["scsi_mod"], &[]),
            with_pci(
                "ata_piix",
                "drivers/ata/ata_piix.ko",
                &["libata"],
                &["pci:v00008086d00007010sv*sd*bc*sc*i*"],
            ),
            with_pci(
                "ahci",
                "drivers/ata/ahci.ko",
                &["libata"],
                &["pci:v*d*sv*sd*bc01sc06i01*"],
            ),
            with_pci(
                "ena",
                "drivers/net/ethernet/amazon/ena/ena.ko",
                &[],
                &["pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*"],
            ),
            with_pci("virtio_blk", "drivers/block/virtio_blk.ko", &[], &[]),
        ];
        // i440fx: the PIIX IDE controller is there, AHCI and ENA are not.
        let devs = [PIIX_IDE.to_owned(), VIRTIO_NET.to_owned()];
        let mut p = Plan::new(entries.clone(), Some(&devs));
        assert_eq!(p.without_device(), ["ahci", "ena"]);
        p.want(&[Class::Storage, Class::Net]);
        assert_eq!(
            p.unfinished(&[Class::Storage, Class::Net]),
            ["scsi_mod", "libata", "ata_piix", "virtio_blk"]
        );
        assert!(!p.wanted[p.index("ahci").unwrap()]);
        // q35: AHCI instead; a dependency of a waited-for driver is waited for too.
        let devs = [Q35_AHCI.to_owned()];
        let mut p = Plan::new(entries.clone(), Some(&devs));
        p.want(&[Class::Storage]);
        assert_eq!(
            p.unfinished(&[Class::Storage]),
            ["scsi_mod", "libata", "ahci", "virtio_blk"]
        );
        // Neither IDE nor AHCI: the ATA library is not waited for either.
        let devs = [VIRTIO_NET.to_owned()];
        let mut p = Plan::new(entries.clone(), Some(&devs));
        assert_eq!(
            p.without_device(),
            ["scsi_mod", "libata", "ata_piix", "ahci", "ena"]
        );
        p.want(&[Class::Storage]);
        assert_eq!(p.unfinished(&[Class::Storage]), ["virtio_blk"]);
        // No PCI bus to ask: every driver may be needed.
        let p = Plan::new(entries, None);
        assert!(p.without_device().is_empty());
    }
}
