//! Property tests of the parsers that read what another process or the
//! network sends: cloud metadata timestamps (RFC 3339, RFC 1123), the
//! kubelet's PodResources protobuf, and the training events' JSON
//! datagrams. Whatever arrives, they return a value or an error, never
//! panic; arbitrary bytes and mutations of valid inputs, 10,000 cases each.

use accel_collectors::cloud::timefmt;
use accel_collectors::goodput::events;
use accel_collectors::kubernetes::proto;
use accel_collectors::options::parse_duration;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// A valid input with some bytes replaced, some removed and some inserted.
use accel_collectors::testing::mutated_bytes as mutated;

const TIMES: &[&[u8]] = &[
    b"2024-05-01T10:00:00Z",
    b"2024-05-01T12:00:00+02:00",
    b"2024-05-01T10:00:00.123456-07:30",
    "2024-05-01T10:00:00.5+0\u{e9}:0".as_bytes(),
    b"Wed, 01 May 2024 10:00:00 GMT",
    b"1 May 2024 10:00:00 GMT",
    b"21 Jan 2019 09:00:43 +0000",
];

const EVENTS: &[&[u8]] = &[
    br#"{"v":1,"kind":"run_start","run":"llama70b-0412","rank":0,"world_size":64,"devices":[0,"GPU-abc","3"],"resume_step":12000,"labels":{"model":"llama-70b"}}"#,
    br#"{"v":1,"kind":"step","run":"r","rank":3,"step":12001,"seconds":1.92,"tokens":4194304,"model_flops":1.2e16,"dtype":"fp8"}"#,
    br#"{"v":1,"kind":"phase","run":"r","phase":"custom:warm-up_2","seconds":3}"#,
    br#"{"v":1,"kind":"checkpoint","run":"r","rank":0,"step":12000}"#,
    br#"{"v":1,"kind":"run_end","run":"r","rank":0}"#,
];

/// Protobuf: a length-delimited field.
fn ld(field: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![field << 3 | 2];
    let mut n = body.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(b);
            break;
        }
        v.push(b | 0x80);
    }
    v.extend_from_slice(body);
    v
}

/// A ListPodResourcesResponse with one pod, one container, one GPU.
fn pod_list() -> Vec<u8> {
    let devices = [ld(1, b"nvidia.com/gpu"), ld(2, b"GPU-0"), ld(2, b"GPU-1")].concat();
    let container = [ld(1, b"trainer"), ld(2, &devices)].concat();
    let pod = [ld(1, b"llama-0"), ld(2, b"ml"), ld(3, &container)].concat();
    [ld(1, &pod), ld(1, &pod)].concat()
}

fn pod_lists() -> &'static [&'static [u8]] {
    static LISTS: std::sync::OnceLock<Vec<&'static [u8]>> = std::sync::OnceLock::new();
    LISTS.get_or_init(|| vec![Box::leak(pod_list().into_boxed_slice())])
}

proptest! {
    #![proptest_config(Config::with_cases(10_000))]

    #[test]
    fn timestamps_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = timefmt::any(&s);
    }

    #[test]
    fn mutated_timestamps_never_panic(bytes in mutated(TIMES), junk in "\\PC{0,8}") {
        let s = String::from_utf8_lossy(&bytes);
        if let Some(t) = timefmt::any(&s) {
            prop_assert!(t.is_finite() && t >= -86_400.0, "{s:?} -> {t}");
        }
        let _ = timefmt::any(&format!("{s}{junk}"));
        let _ = timefmt::rfc3339(&format!("2024-05-01T10:00:00{junk}"));
    }

    #[test]
    fn pod_resources_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = proto::decode_list(&bytes) {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn mutated_pod_resources_never_panic(bytes in mutated(pod_lists())) {
        match proto::decode_list(&bytes) {
            Ok(pods) => prop_assert!(pods.len() <= bytes.len()),
            Err(e) => prop_assert!(e.to_string().starts_with("invalid PodResources message: ")),
        }
    }

    #[test]
    fn event_datagrams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = events::parse(&bytes);
    }

    #[test]
    fn mutated_event_datagrams_never_panic(bytes in mutated(EVENTS)) {
        if let Ok(e) = events::parse(&bytes) {
            prop_assert!(events::KINDS.contains(&e.kind()));
        }
    }

    #[test]
    fn durations_never_panic(s in "[0-9]{0,25}(ns|us|ms|s|m|h|d|w|y|x)?([0-9]{0,25}(ms|s|m|h|d))?") {
        if let Err(e) = parse_duration(&s) {
            prop_assert!(!e.contains('\n') && !e.is_empty());
        }
    }
}

#[test]
fn valid_inputs_parse() {
    assert_eq!(timefmt::any("2024-05-01T10:00:00Z"), Some(1714557600.0));
    assert_eq!(proto::decode_list(&pod_list()).unwrap().len(), 2);
    for e in EVENTS {
        assert!(events::parse(e).is_ok(), "{}", String::from_utf8_lossy(e));
    }
}

#[test]
fn durations_past_the_maximum_are_errors() {
    for s in [
        "18446744073709551615d18446744073709551615d",
        "18446744073709551615y",
        "99999999999999999999999s",
        "584942417355y1s",
    ] {
        let e = parse_duration(s).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }
}
