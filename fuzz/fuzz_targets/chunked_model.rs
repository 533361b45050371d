//! Differential: a body built from the input by an obviously correct model
//! (chunks of chosen sizes, each size written with optional leading zeros,
//! upper case and an extension, then optional trailers) must decode to
//! exactly the model's payload, ending exactly at the model's last byte,
//! and re-frame (push_chunk / push_last_chunk) to a body that decodes the
//! same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringway::http::{push_chunk, push_last_chunk, ChunkedDecoder};

fuzz_target!(|input: (Vec<(u8, u8)>, bool)| {
    let (chunks, trailer) = input;
    let mut body = Vec::new();
    let mut payload = Vec::new();
    for (i, (len, style)) in chunks.iter().take(64).enumerate() {
        let len = usize::from(*len);
        if len == 0 {
            continue;
        }
        let data: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        let mut size = format!("{len:x}");
        if style & 1 != 0 {
            size = format!("00{size}");
        }
        if style & 2 != 0 {
            size = size.to_uppercase();
        }
        body.extend_from_slice(size.as_bytes());
        if style & 4 != 0 {
            body.extend_from_slice(b";ext=\"v\"");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
        payload.extend_from_slice(&data);
    }
    body.extend_from_slice(b"0\r\n");
    if trailer {
        body.extend_from_slice(b"X-T: 1\r\n");
    }
    body.extend_from_slice(b"\r\n");
    let end = body.len();
    body.extend_from_slice(b"GET /next HTTP/1.1\r\n");

    let mut d = ChunkedDecoder::new(0);
    let mut got = Vec::new();
    let (used, done) = d.feed(&body, &mut |x| got.extend_from_slice(x)).expect("a well-formed body");
    assert!(done);
    assert_eq!(used, end, "the body ends where the model says");
    assert_eq!(got, payload);

    let mut reframed = Vec::new();
    push_chunk(&mut reframed, &got);
    push_last_chunk(&mut reframed, d.trailers());
    let mut d2 = ChunkedDecoder::new(0);
    let mut again = Vec::new();
    let (used2, done2) = d2.feed(&reframed, &mut |x| again.extend_from_slice(x)).expect("canonical body");
    assert!(done2 && used2 == reframed.len());
    assert_eq!(again, payload);
});
