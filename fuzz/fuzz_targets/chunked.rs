//! The chunked decoder on arbitrary bytes: never panics, never claims more
//! input than it was given, and comes to the same end (error, incomplete,
//! or done at the same byte with the same payload) whether fed whole or in
//! pieces (the piece size comes from the input).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringway::http::ChunkedDecoder;

/// How a feed ended: Err, incomplete (None) or done after `n` bytes.
type End = Result<Option<usize>, ()>;

fn whole(data: &[u8], out: &mut Vec<u8>) -> End {
    let mut d = ChunkedDecoder::new(1 << 20);
    match d.feed(data, &mut |x| out.extend_from_slice(x)) {
        Ok((used, true)) => {
            assert!(used <= data.len());
            Ok(Some(used))
        }
        Ok((used, false)) => {
            assert_eq!(used, data.len(), "an unfinished feed takes everything");
            Ok(None)
        }
        Err(_) => Err(()),
    }
}

fn pieces(data: &[u8], step: usize, out: &mut Vec<u8>) -> End {
    let mut d = ChunkedDecoder::new(1 << 20);
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + step).min(data.len());
        match d.feed(&data[pos..end], &mut |x| out.extend_from_slice(x)) {
            Ok((used, true)) => return Ok(Some(pos + used)),
            Ok((used, false)) => {
                assert_eq!(used, end - pos);
                pos = end;
            }
            Err(_) => return Err(()),
        }
    }
    Ok(None)
}

fuzz_target!(|input: (u8, &[u8])| {
    let (split, data) = input;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let ra = whole(data, &mut a);
    let rb = pieces(data, usize::from(split).max(1), &mut b);
    assert_eq!(ra, rb, "whole and piecewise feeds disagree");
    if let Ok(Some(_)) = ra {
        assert_eq!(a, b);
    }
});
