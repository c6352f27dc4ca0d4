//! Frame lists as users write them (`1-24,30,40-50x2`): `parse_frames`.
//! Whatever the text: no panic, no hang, and a list that parses gives what
//! the parser promises: sorted distinct frames, each in Blender's range, at
//! most `MAX_FRAMES` of them, each one the list names, and the same frames
//! again from `format_frames`.

#![no_main]

use herd::controller::frames::{MAX_FRAMES, format_frames, parse_frames};
use herd::wire::FRAME_RANGE;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = std::str::from_utf8(data) else {
        return;
    };
    let frames = match parse_frames(list) {
        Ok(frames) => frames,
        Err(err) => {
            assert_eq!(err.list, list);
            return;
        }
    };
    assert!(!frames.is_empty() && frames.len() <= MAX_FRAMES);
    assert!(frames.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(frames.iter().all(|frame| FRAME_RANGE.contains(frame)));
    // Every frame lies within one of the list's items' bounds.
    let (lowest, highest) = bounds(list);
    assert!(frames[0] >= lowest && frames[frames.len() - 1] <= highest);
    assert_eq!(parse_frames(&format_frames(&frames)).ok(), Some(frames));
});

/// The smallest and largest number written in the list, steps aside: the
/// frames must lie between them.
fn bounds(list: &str) -> (i32, i32) {
    let mut lowest = i32::MAX;
    let mut highest = i32::MIN;
    for item in list.split(',') {
        let range = item.split(['x', 'X']).next().unwrap_or("").trim();
        let split = range
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '-')
            .map_or(range.len(), |(at, _)| at);
        for text in [&range[..split], range.get(split + 1..).unwrap_or("")] {
            if let Ok(value) = text.trim().parse::<i32>() {
                lowest = lowest.min(value);
                highest = highest.max(value);
            }
        }
    }
    (lowest, highest)
}
