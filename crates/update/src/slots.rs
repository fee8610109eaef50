//! The A/B slot state machine on GRUB's environment block (RAUC's variables), sans-IO.
//!
//! GRUB (the image's `grub.cfg`, modelled exactly by [`grub_boot`]) boots the first slot in
//! `ORDER` with `X_OK=1` and `X_TRY=0`, setting `X_TRY=1` before it starts; if there is none it
//! boots the first slot with `X_OK=1` anyway (`virga.boot=fallback`). Missing variables take
//! grub.cfg's defaults (`ORDER="A" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0`). The guest, booted in slot
//! X, changes the block only through the transitions here, each one whole-block write:
//!
//! | transition | writes | precondition |
//! |---|---|---|
//! | [`mark_good`] | `X_TRY=0` | X_OK=1 |
//! | [`detect_rollback`] | `Y_OK=0`, `ORDER="X Y"` | Y_OK=1, Y_TRY=1, Y before X: Y was tried and never marked good |
//! | [`begin_install`] | `Y_OK=0 Y_TRY=0 ORDER="X Y"` | X marked good (X_OK=1, X_TRY=0), Y exists |
//! | (write the slot) | partitions + ESP files only | Y_OK=0 |
//! | [`arm`] | `Y_OK=1 Y_TRY=0 ORDER="Y X"` | Y_OK=0 (installing), X_OK=1 |
//! | [`cancel_install`] | `Y_OK=0 ORDER="X Y"` | – |
//! | [`manual_rollback`] | `Y_TRY=0 ORDER="Y X"` | Y_OK=1 (the previous system is intact) |
//!
//! Invariants (tested for a power loss at every point, [`tests`]): the slot being written
//! always has `_OK=0`, so GRUB never starts a half-written system; the running slot keeps
//! `_OK=1` throughout, so there is always a bootable slot; an armed slot gets exactly one try
//! and, unless it marks itself good, the next reset boots the previous slot. The variables fit
//! in the block's first 512-byte sector ([`EnvBlock::render`] of these five is under 70 bytes),
//! so a torn write of the 1024-byte block cannot mix old and new slot variables.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::grubenv::EnvBlock;

/// A system slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Slot {
    /// Slot A (`usr-A`, `vmlinuz-a`).
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// `A` or `B`.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'A',
            Slot::B => 'B',
        }
    }

    /// From `A`/`B` (as on the command line, `virga.slot=`).
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// How GRUB chose the booted slot (`virga.boot=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// The first good, untried slot (marked tried before boot).
    Try,
    /// Every good slot had been tried without being marked good since: the first good one.
    Fallback,
}

impl BootMode {
    /// From `try`/`fallback`.
    pub fn parse(s: &str) -> Option<BootMode> {
        match s {
            "try" => Some(BootMode::Try),
            "fallback" => Some(BootMode::Fallback),
            _ => None,
        }
    }
}

/// The booted slot, from `virga.slot=` and `virga.boot=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booted {
    /// The slot.
    pub slot: Slot,
    /// How it was chosen.
    pub mode: BootMode,
}

/// The five slot variables, as GRUB reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotEnv {
    /// Slots in priority order (words of `ORDER` that name a slot, first occurrence).
    pub order: Vec<Slot>,
    /// `X_OK == "1"`.
    pub ok: [bool; 2],
    /// `X_TRY != "0"` (GRUB only picks a slot whose `_TRY` is exactly `0`).
    pub tried: [bool; 2],
}

const VARS: [&str; 5] = ["ORDER", "A_OK", "A_TRY", "B_OK", "B_TRY"];

impl SlotEnv {
    /// A fresh two-slot image: `ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0`.
    pub fn fresh() -> SlotEnv {
        SlotEnv::factory(2)
    }

    /// What an image with `slots` slots (1 or 2) ships: slot A good and untried, B empty;
    /// `ORDER="A"` for a one-slot image (which never updates).
    pub fn factory(slots: u8) -> SlotEnv {
        SlotEnv {
            order: if slots >= 2 {
                vec![Slot::A, Slot::B]
            } else {
                vec![Slot::A]
            },
            ok: [true, false],
            tried: [false, false],
        }
    }

    /// A block holding just the five slot variables.
    pub fn to_block(&self) -> EnvBlock {
        let mut b = EnvBlock::default();
        self.apply(&mut b);
        b
    }

    /// The slot state in `block`, with grub.cfg's defaults for missing variables.
    pub fn from_block(block: &EnvBlock) -> SlotEnv {
        let mut order = Vec::new();
        for w in block.get("ORDER").unwrap_or("A").split_whitespace() {
            if let Some(s) = Slot::parse(w)
                && !order.contains(&s)
            {
                order.push(s);
            }
        }
        let get = |k: &str, default: &str| block.get(k).unwrap_or(default).to_owned();
        SlotEnv {
            order,
            ok: [get("A_OK", "1") == "1", get("B_OK", "0") == "1"],
            tried: [get("A_TRY", "0") != "0", get("B_TRY", "0") != "0"],
        }
    }

    /// Writes the five variables into `block` (others are kept).
    pub fn apply(&self, block: &mut EnvBlock) {
        let b = |v: bool| if v { "1" } else { "0" };
        let order: Vec<String> = self.order.iter().map(Slot::to_string).collect();
        let values = [
            order.join(" "),
            b(self.ok[0]).into(),
            b(self.tried[0]).into(),
            b(self.ok[1]).into(),
            b(self.tried[1]).into(),
        ];
        for (k, v) in VARS.iter().zip(values) {
            block.set(k, &v);
        }
    }

    /// The slot holds a complete system.
    pub fn is_ok(&self, s: Slot) -> bool {
        self.ok[s.index()]
    }

    /// GRUB started the slot and it has not been marked good since.
    pub fn is_tried(&self, s: Slot) -> bool {
        self.tried[s.index()]
    }

    fn position(&self, s: Slot) -> Option<usize> {
        self.order.iter().position(|&o| o == s)
    }

    fn with(&self, f: impl FnOnce(&mut SlotEnv)) -> SlotEnv {
        let mut e = self.clone();
        f(&mut e);
        e
    }

    /// What the other slot (not `booted`) is, for status reports.
    pub fn other_state(&self, booted: Slot) -> OtherSlot {
        let y = booted.other();
        let Some(py) = self.position(y) else {
            return OtherSlot::Absent;
        };
        let ahead = self.position(booted).is_none_or(|px| py < px);
        match (self.is_ok(y), self.is_tried(y), ahead) {
            (false, false, _) => OtherSlot::Empty,
            (false, true, _) => OtherSlot::Abandoned,
            (true, false, true) => OtherSlot::Armed,
            (true, false, false) => OtherSlot::Previous,
            (true, true, true) => OtherSlot::FailedTry,
            (true, true, false) => OtherSlot::Tried,
        }
    }
}

/// The slot that is not running, as the block describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OtherSlot {
    /// A one-slot image.
    Absent,
    /// `_OK=0`: empty, being written, or given up.
    Empty,
    /// `_OK=0 _TRY=1`: tried, failed, and abandoned ([`detect_rollback`] ran).
    Abandoned,
    /// `_OK=1 _TRY=0`, ahead in `ORDER`: boots next (an installed update waiting for reboot).
    Armed,
    /// `_OK=1 _TRY=0`, behind: the previous system, a [`manual_rollback`] target.
    Previous,
    /// `_OK=1 _TRY=1`, ahead: it was started and never marked good (not yet handled).
    FailedTry,
    /// `_OK=1 _TRY=1`, behind: tried earlier without being marked good.
    Tried,
}

/// Why a transition is not allowed now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// One-slot image.
    #[error("the image has no slot {0} (ORDER does not name it): updates need a two-slot disk")]
    NoOtherSlot(Slot),
    /// The running slot has not been marked good.
    #[error(
        "slot {0} (running) is not marked good yet (its _TRY is 1 or _OK is 0): mark the boot good before installing an update"
    )]
    NotGood(Slot),
    /// `arm` without `begin_install`.
    #[error("slot {0} is not being installed (its _OK is 1): call begin_install first")]
    NotInstalling(Slot),
    /// The running slot is not bootable according to the block.
    #[error("the running slot {0} has {0}_OK=0 in grubenv")]
    RunningNotOk(Slot),
    /// Nothing to roll back to.
    #[error("slot {0} holds no good system to roll back to (its _OK is 0)")]
    NoPrevious(Slot),
}

/// GRUB's choice on the next boot and the block it saves: `None` when no slot is bootable.
pub fn grub_boot(env: &SlotEnv) -> Option<(Booted, SlotEnv)> {
    for &s in &env.order {
        if env.is_ok(s) && !env.is_tried(s) {
            let e = env.with(|e| e.tried[s.index()] = true);
            return Some((
                Booted {
                    slot: s,
                    mode: BootMode::Try,
                },
                e,
            ));
        }
    }
    env.order.iter().find(|&&s| env.is_ok(s)).map(|&s| {
        (
            Booted {
                slot: s,
                mode: BootMode::Fallback,
            },
            env.clone(),
        )
    })
}

/// The boot is good (ready, health check passed): `X_TRY=0`.
pub fn mark_good(env: &SlotEnv, booted: Booted) -> Result<SlotEnv, SlotError> {
    let x = booted.slot;
    if !env.is_ok(x) {
        return Err(SlotError::RunningNotOk(x));
    }
    Ok(env.with(|e| e.tried[x.index()] = false))
}

/// A slot that was abandoned, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The slot given up.
    pub abandoned: Slot,
    /// The slot running instead.
    pub running: Slot,
    /// What the block shows.
    pub reason: String,
}

/// At boot: was the other slot tried and never marked good? Then it is abandoned (`Y_OK=0`,
/// `ORDER="X Y"`) and the reason is returned for `virga update status` (the agent adds what the
/// failed boot recorded, if anything, see `docs/updates.md`).
pub fn detect_rollback(env: &SlotEnv, booted: Booted) -> Option<(SlotEnv, Rollback)> {
    let (x, y) = (booted.slot, booted.slot.other());
    if env.other_state(x) != OtherSlot::FailedTry {
        return None;
    }
    let e = env.with(|e| {
        e.ok[y.index()] = false;
        e.order = vec![x, y];
    });
    let reason = format!(
        "slot {y} was started ({y}_TRY=1) but never marked good: it panicked, failed dm-verity, \
         hung until the watchdog reset it, or failed its health check; slot {x} booted instead \
         ({})",
        match booted.mode {
            BootMode::Try => "virga.boot=try",
            BootMode::Fallback => "virga.boot=fallback",
        }
    );
    Some((
        e,
        Rollback {
            abandoned: y,
            running: x,
            reason,
        },
    ))
}

/// Before writing the other slot: `Y_OK=0 Y_TRY=0 ORDER="X Y"`. Returns the new block and the
/// slot to write.
pub fn begin_install(env: &SlotEnv, booted: Booted) -> Result<(SlotEnv, Slot), SlotError> {
    let (x, y) = (booted.slot, booted.slot.other());
    if env.position(y).is_none() {
        return Err(SlotError::NoOtherSlot(y));
    }
    if !env.is_ok(x) || env.is_tried(x) {
        return Err(SlotError::NotGood(x));
    }
    let e = env.with(|e| {
        e.ok[y.index()] = false;
        e.tried[y.index()] = false;
        e.order = vec![x, y];
    });
    Ok((e, y))
}

/// After the other slot was written and verified: `Y_OK=1 Y_TRY=0 ORDER="Y X"`.
pub fn arm(env: &SlotEnv, booted: Booted) -> Result<SlotEnv, SlotError> {
    let (x, y) = (booted.slot, booted.slot.other());
    if env.position(y).is_none() {
        return Err(SlotError::NoOtherSlot(y));
    }
    if env.is_ok(y) {
        return Err(SlotError::NotInstalling(y));
    }
    if !env.is_ok(x) {
        return Err(SlotError::RunningNotOk(x));
    }
    Ok(env.with(|e| {
        e.ok[y.index()] = true;
        e.tried[y.index()] = false;
        e.order = vec![y, x];
    }))
}

/// Gives up an installed or half-written update before it boots: `Y_OK=0 ORDER="X Y"`.
pub fn cancel_install(env: &SlotEnv, booted: Booted) -> Result<SlotEnv, SlotError> {
    let (x, y) = (booted.slot, booted.slot.other());
    if env.position(y).is_none() {
        return Err(SlotError::NoOtherSlot(y));
    }
    Ok(env.with(|e| {
        e.ok[y.index()] = false;
        e.order = vec![x, y];
    }))
}

/// `virga update rollback`: boot the previous system next (`Y_TRY=0 ORDER="Y X"`); it gets one
/// try like an update, and the running slot stays as its fallback.
pub fn manual_rollback(env: &SlotEnv, booted: Booted) -> Result<SlotEnv, SlotError> {
    let (x, y) = (booted.slot, booted.slot.other());
    if env.position(y).is_none() {
        return Err(SlotError::NoOtherSlot(y));
    }
    if !env.is_ok(y) {
        return Err(SlotError::NoPrevious(y));
    }
    Ok(env.with(|e| {
        e.tried[y.index()] = false;
        e.order = vec![y, x];
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn env(order: &str, a_ok: u8, a_try: u8, b_ok: u8, b_try: u8) -> SlotEnv {
        let mut b = EnvBlock::default();
        b.set("ORDER", order);
        b.set("A_OK", &a_ok.to_string());
        b.set("A_TRY", &a_try.to_string());
        b.set("B_OK", &b_ok.to_string());
        b.set("B_TRY", &b_try.to_string());
        SlotEnv::from_block(&b)
    }

    fn render(e: &SlotEnv) -> String {
        let mut b = EnvBlock::default();
        e.apply(&mut b);
        b.vars()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    const A_TRY: Booted = Booted {
        slot: Slot::A,
        mode: BootMode::Try,
    };
    const B_TRY: Booted = Booted {
        slot: Slot::B,
        mode: BootMode::Try,
    };

    #[test]
    fn defaults_and_block_round_trip() {
        let e = SlotEnv::from_block(&EnvBlock::default());
        assert_eq!(e.order, vec![Slot::A]);
        assert_eq!((e.ok, e.tried), ([true, false], [false, false]));
        let fresh = SlotEnv::fresh();
        let mut b = EnvBlock::default();
        b.set("saved_entry", "keep me");
        fresh.apply(&mut b);
        let bytes = b.render().unwrap();
        assert!(
            bytes[..512].ends_with(&[b'#'; 400]),
            "the slot variables fit the first sector"
        );
        let back = EnvBlock::parse(&bytes).unwrap();
        assert_eq!(SlotEnv::from_block(&back), fresh);
        assert_eq!(back.get("saved_entry"), Some("keep me"));
        let one = SlotEnv::factory(1).to_block();
        assert_eq!(one.get("ORDER"), Some("A"));
        assert_eq!(one.vars().len(), 5);
        // GRUB treats anything but "0" as tried and anything but "1" as not ok.
        let mut b = EnvBlock::default();
        b.set("ORDER", "B junk A B");
        b.set("A_TRY", "");
        b.set("B_OK", "yes");
        let e = SlotEnv::from_block(&b);
        assert_eq!(e.order, vec![Slot::B, Slot::A]);
        assert!(e.is_tried(Slot::A));
        assert!(!e.is_ok(Slot::B));
    }

    #[test]
    fn grub_model_matches_grub_cfg() {
        // Fresh: A tried.
        let (b, e) = grub_boot(&SlotEnv::fresh()).unwrap();
        assert_eq!(b, A_TRY);
        assert_eq!(render(&e), "ORDER=A B A_OK=1 A_TRY=1 B_OK=0 B_TRY=0");
        // A tried and not marked good: fallback to A.
        let (b, e2) = grub_boot(&e).unwrap();
        assert_eq!(b.mode, BootMode::Fallback);
        assert_eq!(e2, e);
        // Armed B goes first.
        let (b, _) = grub_boot(&env("B A", 1, 0, 1, 0)).unwrap();
        assert_eq!(b, B_TRY);
        // Failed B: A.
        let (b, _) = grub_boot(&env("B A", 1, 0, 1, 1)).unwrap();
        assert_eq!(b, A_TRY);
        // Nothing ok.
        assert!(grub_boot(&env("A B", 0, 0, 0, 0)).is_none());
    }

    #[test]
    fn every_transition() {
        // Mark good.
        let e = env("A B", 1, 1, 0, 0);
        assert_eq!(
            render(&mark_good(&e, A_TRY).unwrap()),
            "ORDER=A B A_OK=1 A_TRY=0 B_OK=0 B_TRY=0"
        );
        assert_eq!(
            mark_good(&env("A B", 0, 1, 1, 0), A_TRY),
            Err(SlotError::RunningNotOk(Slot::A))
        );
        // Begin install: needs a good running slot and a second slot.
        let good = env("A B", 1, 0, 1, 0);
        let (e, y) = begin_install(&good, A_TRY).unwrap();
        assert_eq!(y, Slot::B);
        assert_eq!(render(&e), "ORDER=A B A_OK=1 A_TRY=0 B_OK=0 B_TRY=0");
        assert_eq!(
            begin_install(&env("A B", 1, 1, 0, 0), A_TRY),
            Err(SlotError::NotGood(Slot::A))
        );
        assert_eq!(
            begin_install(&env("A", 1, 0, 0, 0), A_TRY),
            Err(SlotError::NoOtherSlot(Slot::B))
        );
        // Arm.
        let armed = arm(&e, A_TRY).unwrap();
        assert_eq!(render(&armed), "ORDER=B A A_OK=1 A_TRY=0 B_OK=1 B_TRY=0");
        assert_eq!(armed.other_state(Slot::A), OtherSlot::Armed);
        assert_eq!(arm(&good, A_TRY), Err(SlotError::NotInstalling(Slot::B)));
        // Cancel.
        assert_eq!(
            render(&cancel_install(&armed, A_TRY).unwrap()),
            "ORDER=A B A_OK=1 A_TRY=0 B_OK=0 B_TRY=0"
        );
        // B boots, marks good: A is the previous system.
        let (booted, e) = grub_boot(&armed).unwrap();
        assert_eq!(booted, B_TRY);
        let e = mark_good(&e, booted).unwrap();
        assert_eq!(render(&e), "ORDER=B A A_OK=1 A_TRY=0 B_OK=1 B_TRY=0");
        assert_eq!(e.other_state(Slot::B), OtherSlot::Previous);
        assert!(detect_rollback(&e, booted).is_none());
        // Manual rollback to A.
        let r = manual_rollback(&e, booted).unwrap();
        assert_eq!(render(&r), "ORDER=A B A_OK=1 A_TRY=0 B_OK=1 B_TRY=0");
        assert_eq!(grub_boot(&r).unwrap().0, A_TRY);
        assert_eq!(
            manual_rollback(&env("B A", 0, 0, 1, 0), B_TRY),
            Err(SlotError::NoPrevious(Slot::A))
        );
    }

    #[test]
    fn detect_rollback_after_a_failed_try() {
        let armed = env("B A", 1, 0, 1, 0);
        let (b1, e1) = grub_boot(&armed).unwrap();
        assert_eq!(b1, B_TRY);
        // B panics before marking good; GRUB boots A.
        let (b2, e2) = grub_boot(&e1).unwrap();
        assert_eq!(b2, A_TRY);
        assert_eq!(e2.other_state(Slot::A), OtherSlot::FailedTry);
        let (e3, rb) = detect_rollback(&e2, b2).unwrap();
        assert_eq!(rb.abandoned, Slot::B);
        assert!(rb.reason.contains("never marked good"), "{}", rb.reason);
        assert_eq!(render(&e3), "ORDER=A B A_OK=1 A_TRY=1 B_OK=0 B_TRY=1");
        assert_eq!(e3.other_state(Slot::A), OtherSlot::Abandoned);
        // Detected once only.
        assert!(detect_rollback(&e3, b2).is_none());
        let e4 = mark_good(&e3, b2).unwrap();
        assert_eq!(grub_boot(&e4).unwrap().0, A_TRY);
        // A pending (not yet rebooted) armed slot is not a rollback.
        assert!(detect_rollback(&armed, A_TRY).is_none());
    }

    /// The whole update as the agent runs it, with a power loss possible at every step.
    /// Content: whether each slot's partitions hold a complete system, and whether that system
    /// is healthy (marks itself good).
    #[derive(Debug, Clone)]
    struct World {
        env: SlotEnv,
        complete: [bool; 2],
        healthy: [bool; 2],
    }

    /// Boots until a healthy slot runs (at most `limit` boots), checking on every boot that
    /// GRUB finds a slot and never starts an incomplete one. Runs the agent's boot-time steps.
    fn boot_until_healthy(w: &mut World, limit: usize) -> Booted {
        for _ in 0..limit {
            let (booted, env) = grub_boot(&w.env).expect("a bootable slot");
            w.env = env;
            let i = booted.slot.index();
            assert!(
                w.complete[i],
                "booted an incomplete slot {booted:?}: {:?}",
                w.env
            );
            if !w.healthy[i] {
                continue; // panics / hangs: reset
            }
            if let Some((e, _)) = detect_rollback(&w.env, booted) {
                w.env = e;
            }
            w.env = mark_good(&w.env, booted).unwrap();
            return booted;
        }
        panic!("no healthy boot within {limit} boots: {w:?}");
    }

    /// Steps of one update from `booted`; `crash_at` stops after that many steps.
    fn update(w: &mut World, booted: Booted, new_healthy: bool, crash_at: usize) -> bool {
        let y = booted.slot.other();
        let mut step = 0;
        let crash = |step: &mut usize| {
            *step += 1;
            *step > crash_at
        };
        let (e, _) = begin_install(&w.env, booted).unwrap();
        w.env = e;
        if crash(&mut step) {
            return false;
        }
        // Writing the partitions: the old content is gone as soon as writing starts.
        w.complete[y.index()] = false;
        w.healthy[y.index()] = new_healthy;
        if crash(&mut step) {
            return false;
        }
        w.complete[y.index()] = true;
        if crash(&mut step) {
            return false;
        }
        w.env = arm(&w.env, booted).unwrap();
        // Armed: a power loss now is as good as the planned reboot.
        true
    }

    #[test]
    fn power_loss_at_every_point_keeps_a_bootable_system() {
        for new_healthy in [true, false] {
            for crash_at in 0..=3 {
                let mut w = World {
                    env: SlotEnv::fresh(),
                    complete: [true, false],
                    healthy: [true, false],
                };
                let booted = boot_until_healthy(&mut w, 2);
                assert_eq!(booted.slot, Slot::A);
                let done = update(&mut w, booted, new_healthy, crash_at);
                // Power loss or planned reboot: either way the machine restarts.
                let after = boot_until_healthy(&mut w, 3);
                let expect = if done && new_healthy {
                    Slot::B
                } else {
                    Slot::A
                };
                assert_eq!(
                    after.slot, expect,
                    "healthy={new_healthy} crash_at={crash_at}"
                );
                // The next update starts from a clean state whatever happened.
                assert!(begin_install(&w.env, after).is_ok());
                if !done {
                    assert_eq!(w.env.other_state(Slot::A), OtherSlot::Empty);
                } else if !new_healthy {
                    assert_eq!(w.env.other_state(Slot::A), OtherSlot::Abandoned);
                }
            }
        }
    }

    #[test]
    fn interruption_points_spelled_out() {
        // Running A (good), B holds an older good system.
        let start = env("A B", 1, 0, 1, 0);
        // 1. After begin_install: B unbootable, A boots.
        let (e1, _) = begin_install(&start, A_TRY).unwrap();
        assert_eq!(render(&e1), "ORDER=A B A_OK=1 A_TRY=0 B_OK=0 B_TRY=0");
        assert_eq!(grub_boot(&e1).unwrap().0, A_TRY);
        // 2. While writing (block unchanged): the same.
        // 3. After arm: B boots once.
        let e3 = arm(&e1, A_TRY).unwrap();
        assert_eq!(render(&e3), "ORDER=B A A_OK=1 A_TRY=0 B_OK=1 B_TRY=0");
        let (b, e4) = grub_boot(&e3).unwrap();
        assert_eq!(b, B_TRY);
        // 4. Power lost during B's first boot (before mark good): A next.
        assert_eq!(render(&e4), "ORDER=B A A_OK=1 A_TRY=0 B_OK=1 B_TRY=1");
        let (b, e5) = grub_boot(&e4).unwrap();
        assert_eq!(b, A_TRY);
        // 5. Power lost between detect_rollback and mark_good on A: A falls back, still A.
        let (e6, _) = detect_rollback(&e5, b).unwrap();
        assert_eq!(render(&e6), "ORDER=A B A_OK=1 A_TRY=1 B_OK=0 B_TRY=1");
        let (b, _) = grub_boot(&e6).unwrap();
        assert_eq!(
            b,
            Booted {
                slot: Slot::A,
                mode: BootMode::Fallback
            }
        );
        // 6. Power lost between a manual rollback and the reboot: the target boots once.
        let good_b = env("B A", 1, 0, 1, 0);
        let r = manual_rollback(&good_b, B_TRY).unwrap();
        let (b, e) = grub_boot(&r).unwrap();
        assert_eq!(b, A_TRY);
        // ... and if A fails there, B (still good) is next.
        assert_eq!(grub_boot(&e).unwrap().0, B_TRY);
    }
}
