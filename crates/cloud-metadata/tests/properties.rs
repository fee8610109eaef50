//! Property tests over the public API: every parser is total on arbitrary input, the crawlers
//! terminate on arbitrary outcome sequences, and round trips hold where they exist.

use cloud_metadata::ec2::{Ec2Config, Ec2Crawler};
use cloud_metadata::http::{Crawler, HttpOutcome, Step};
use cloud_metadata::network::{parse_network_config, parse_network_data};
use cloud_metadata::nocloud::{NoCloudCrawler, NoCloudSeed};
use cloud_metadata::openstack::{self, OpenstackConfig, OpenstackCrawler};
use cloud_metadata::{Datasource, InstanceMetadata, Limits, QUERY_KEYS};
use proptest::prelude::*;

fn outcome() -> impl Strategy<Value = HttpOutcome> {
    prop_oneof![
        4 => (prop::sample::select(vec![200u16, 200, 200, 404, 401, 403, 405, 500, 302, 0, 999]),
              prop_oneof![
                  Just(Vec::new()),
                  Just(b"i-1234".to_vec()),
                  Just(b"0=key\n1=other".to_vec()),
                  Just(b"latest\n2012-08-10\n".to_vec()),
                  Just(br#"{"uuid": "u", "files": [{"path": "/a", "content_path": "/content/0"}]}"#.to_vec()),
                  proptest::collection::vec(any::<u8>(), 0..64),
              ])
            .prop_map(|(status, body)| HttpOutcome::Response { status, body }),
        1 => "[a-z ]{0,10}".prop_map(HttpOutcome::Failed),
    ]
}

fn run(
    crawler: &mut dyn Crawler,
    outcomes: &[HttpOutcome],
) -> Result<Option<InstanceMetadata>, ()> {
    let mut last = None;
    let mut it = outcomes.iter().cycle();
    // Every crawler is bounded by max_requests (256 by default).
    for _ in 0..300 {
        match crawler.step(last.take()) {
            Ok(Step::Send(_)) => {
                last = Some(it.next().cloned().unwrap_or(HttpOutcome::status(404)))
            }
            Ok(Step::Done(md)) => return Ok(Some(*md)),
            Err(_) => return Ok(None),
        }
    }
    Err(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn network_parsers_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let l = Limits::default();
        let _ = parse_network_config(&bytes, &l);
        let _ = parse_network_data(&bytes, &l);
    }

    #[test]
    fn network_config_yaml_like_is_total(s in "(version: [12]\n|config:\n|ethernets:\n|  - type: (physical|bond|vlan|route|nameserver)\n|    name: e[a-z0-9]{0,3}\n|    subnets:\n|      - type: (static|dhcp|static6)\n|        address: 10.0.0.[0-9]/[0-9]{1,2}\n|  e0: \\{dhcp4: (yes|true|no)\\}\n|vlan_id: [0-9]{1,5}\n|gateway: [0-9.:a-f]{1,10}\n){0,12}") {
        let _ = parse_network_config(s.as_bytes(), &Limits::default());
    }

    #[test]
    fn openstack_parsers_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..512), listing in "\\PC{0,80}") {
        let l = Limits::default();
        let _ = openstack::parse_meta_data(&bytes, Datasource::Openstack, &l);
        let _ = openstack::parse_vendor_data(&bytes, &l);
        let order = openstack::version_order(&listing);
        prop_assert!(order.iter().all(|v| v == "latest" || (v.len() == 10 && !v.contains('/'))));
        let _ = openstack::select_version(&listing);
    }

    #[test]
    fn meta_data_json_round_trip(uuid in "[a-f0-9-]{1,36}", host in "[a-z]([a-z0-9-]{0,19}[a-z0-9])?(\\.[a-z]{2,5})?", idx in 0u64..100) {
        let doc = serde_json::json!({"uuid": uuid, "hostname": host, "launch_index": idx, "meta": {"k": "v"}});
        let md = openstack::parse_meta_data(doc.to_string().as_bytes(), Datasource::ConfigDrive, &Limits::default()).unwrap();
        prop_assert_eq!(&md.instance_id, &uuid);
        prop_assert_eq!(md.local_hostname.as_deref(), Some(host.as_str()));
        prop_assert_eq!(md.fqdn.is_some(), host.contains('.'));
        prop_assert_eq!(md.launch_index, Some(idx));
        // The model survives its own JSON form, and every query key answers.
        let back: InstanceMetadata = serde_json::from_str(&serde_json::to_string(&md).unwrap()).unwrap();
        prop_assert_eq!(&back, &md);
        for k in QUERY_KEYS {
            prop_assert!(md.query(k).is_ok());
        }
    }

    #[test]
    fn ec2_crawler_terminates(outcomes in proptest::collection::vec(outcome(), 1..40), token in any::<bool>()) {
        let mut c = Ec2Crawler::new(Ec2Config { use_token: token, ..Ec2Config::default() });
        let r = run(&mut c, &outcomes);
        prop_assert!(r.is_ok(), "did not terminate");
        if let Ok(Some(md)) = r {
            prop_assert!(!md.instance_id.is_empty());
            prop_assert_eq!(md.datasource, Datasource::Ec2);
        }
    }

    #[test]
    fn openstack_crawler_terminates(outcomes in proptest::collection::vec(outcome(), 1..40), drive in any::<bool>()) {
        let config = if drive { OpenstackConfig::config_drive() } else { OpenstackConfig::metadata_service() };
        let mut c = OpenstackCrawler::new(config);
        prop_assert!(run(&mut c, &outcomes).is_ok(), "did not terminate");
    }

    #[test]
    fn nocloud_crawler_terminates(outcomes in proptest::collection::vec(outcome(), 1..10)) {
        let mut c = NoCloudCrawler::new(Datasource::NoCloudNet, Limits::default(), std::time::Duration::from_secs(1));
        prop_assert!(run(&mut c, &outcomes).is_ok());
    }

    #[test]
    fn seed_round_trip(host in "[a-z][a-z0-9-]{0,15}", iid in "[a-z0-9-]{1,20}", port in 1u16..65535) {
        let line = format!("ro ds=nocloud;s=http://10.0.2.2:{port}/seed/;h={host};i={iid} quiet");
        let s = NoCloudSeed::from_cmdline(&line).unwrap().unwrap();
        let expected_url = format!("http://10.0.2.2:{port}/seed/");
        prop_assert_eq!(s.seedfrom.as_deref(), Some(expected_url.as_str()));
        prop_assert_eq!(s.local_hostname.as_deref(), Some(host.as_str()));
        prop_assert_eq!(s.instance_id.as_deref(), Some(iid.as_str()));
    }
}
