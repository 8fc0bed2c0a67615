//! The decoder never panics and refuses every malformed input with a typed error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use prost::Message;
use settle_wire::*;

fn tx(id: &str) -> Transaction {
    Transaction {
        id: id.to_string(),
        partner: Some("acme".into()),
        kind: TxKind::Sale as i32,
        amount: Some("100.00".into()),
        currency: Some("EUR".into()),
        occurred_at: "2026-01-02T10:00:00Z".into(),
        original: None,
        reason: None,
        metadata_json: Some(r#"{"order":"o-1"}"#.into()),
    }
}

fn batch(n: usize) -> Request {
    Request::new(request::Body::SubmitBatch(SubmitBatch {
        transactions: (0..n).map(|i| tx(&format!("t{i}"))).collect(),
    }))
}

#[test]
fn round_trip_request_and_response() {
    let req = batch(3);
    let frame = encode_frame(&req).unwrap();
    assert_eq!(decode_request_frame(&frame).unwrap(), req);
    let resp = Response::new(response::Body::SubmitResult(SubmitResult {
        results: vec![TxResult {
            outcome: Some(tx_result::Outcome::Exception(Exception { reason: "unknown_partner".into() })),
            duplicate: true,
        }],
    }));
    let frame = encode_frame(&resp).unwrap();
    assert_eq!(decode_response_frame(&frame).unwrap(), resp);
    let err = Response::error(ErrorCode::Overloaded, "busy");
    match decode_response_frame(&encode_frame(&err).unwrap()).unwrap().body {
        Some(response::Body::Error(e)) => {
            assert_eq!(e.error_code(), ErrorCode::Overloaded);
            assert!(e.retryable);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn optional_fields_keep_absent_apart_from_empty() {
    let mut t = tx("a");
    t.reason = Some(String::new());
    t.partner = None;
    let req = Request::new(request::Body::SubmitBatch(SubmitBatch { transactions: vec![t.clone()] }));
    let back = decode_request_frame(&encode_frame(&req).unwrap()).unwrap();
    let Some(request::Body::SubmitBatch(b)) = back.body else { panic!() };
    assert_eq!(b.transactions[0].reason, Some(String::new()));
    assert_eq!(b.transactions[0].partner, None);
}

#[test]
fn unknown_and_missing_versions_are_refused() {
    for version in [0, 2, 99, u32::MAX] {
        let mut req = batch(1);
        req.version = version;
        let err = decode_request_frame(&encode_frame(&req).unwrap()).unwrap_err();
        assert_eq!(err, WireError::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION });
        assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
    }
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    let len = u32::try_from(MAX_FRAME_BYTES + 1).unwrap();
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0; 16]);
    assert_eq!(
        split_frame(&frame),
        Err(WireError::TooLarge { len: MAX_FRAME_BYTES + 1, max: MAX_FRAME_BYTES })
    );
    assert_eq!(frame_body_len(u32::MAX.to_be_bytes()).unwrap_err().code(), ErrorCode::TooLarge);
}

#[test]
fn batch_limits() {
    let err = decode_request_frame(&encode_frame(&batch(0)).unwrap()).unwrap_err();
    assert_eq!(err, WireError::EmptyBatch);
    let big = batch(MAX_BATCH_TXS + 1);
    let body = big.encode_to_vec();
    let err = decode_request(&body).unwrap_err();
    assert_eq!(err, WireError::TooManyItems { count: MAX_BATCH_TXS + 1, max: MAX_BATCH_TXS });
    assert_eq!(err.code(), ErrorCode::TooLarge);
    assert!(decode_request(&batch(MAX_BATCH_TXS).encode_to_vec()).is_ok());
}

#[test]
fn missing_body_and_trailing_bytes() {
    let req = Request { version: PROTOCOL_VERSION, body: None };
    assert_eq!(decode_request_frame(&encode_frame(&req).unwrap()), Err(WireError::MissingBody));
    let mut frame = encode_frame(&batch(1)).unwrap();
    frame.push(0);
    assert_eq!(decode_request_frame(&frame), Err(WireError::TrailingBytes { extra: 1 }));
}

#[test]
fn every_truncation_of_a_valid_frame_is_an_error() {
    let frame = encode_frame(&batch(4)).unwrap();
    for cut in 0..frame.len() {
        assert!(split_frame(&frame[..cut]).unwrap().is_none(), "cut at {cut}");
        let err = decode_request_frame(&frame[..cut]).unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }), "cut at {cut}: {err:?}");
    }
}

#[test]
fn the_schema_file_carries_every_tag_of_the_structs() {
    // A cheap guard that the hand-written structs and the .proto stay in step.
    for line in [
        "uint32 version = 1;",
        "SubmitBatch submit_batch = 3;",
        "AddContractVersion add_contract_version = 7;",
        "optional string metadata_json = 9;",
        "string occurred_at = 6;",
        "bool duplicate = 3;",
        "string preview_json = 6;",
        "ERROR_CODE_INTERNAL = 7;",
        "TX_KIND_ADJUSTMENT = 5;",
    ] {
        assert!(PROTO_SCHEMA.contains(line), "{line}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha, rng_seed: proptest::test_runner::RngSeed::Fixed(0x005e_771e), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        let _ = decode_request_frame(&bytes);
        let _ = split_frame(&bytes);
    }

    #[test]
    fn mutated_valid_frames_never_panic(n in 1usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut frame = encode_frame(&batch(n)).unwrap();
        for (at, byte) in flips {
            let i = at % frame.len();
            frame[i] ^= byte;
        }
        let cut = cut % (frame.len() + 1);
        let _ = decode_request_frame(&frame[..cut]);
        let _ = decode_request(&frame[FRAME_HEADER_BYTES.min(cut)..cut]);
    }

    #[test]
    fn any_header_length_is_checked(len in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frame = len.to_be_bytes().to_vec();
        frame.extend_from_slice(&tail);
        match split_frame(&frame) {
            Ok(Some((body, used))) => { prop_assert_eq!(body.len() as u64, u64::from(len)); prop_assert!(used <= frame.len()); }
            Ok(None) => prop_assert!(u64::from(len) > tail.len() as u64),
            Err(e) => { prop_assert_eq!(e.code(), ErrorCode::TooLarge); prop_assert!(len as usize > MAX_FRAME_BYTES); }
        }
    }

    #[test]
    fn any_version_other_than_one_is_refused(version in any::<u32>()) {
        let mut req = batch(1);
        req.version = version;
        let got = decode_request(&req.encode_to_vec());
        if version == PROTOCOL_VERSION { prop_assert!(got.is_ok()); } else { prop_assert_eq!(got.unwrap_err().code(), ErrorCode::UnsupportedVersion); }
    }
}
