//! Hostnames: the one policy every source is checked against lives in `boot-contract` (the
//! guest, the image spec and the DHCP client use it too); re-exported here for the parsers.

pub use boot_contract::hostname::*;
