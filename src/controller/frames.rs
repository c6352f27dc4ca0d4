//! Frame lists as users write them: `1-24,30,40-50x2`.

use crate::wire::FRAME_RANGE;

/// Most frames one job may list.
pub const MAX_FRAMES: usize = 1_000_000;

/// A frame list that does not parse; the message says which part and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad frame list '{list}': {reason} (write it like 1-24,30,40-50x2)")]
pub struct FrameListError {
    /// The whole list as given.
    pub list: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses `1-24,30,40-50x2` into sorted, distinct frame numbers. Items are
/// single frames, inclusive ranges `A-B`, or ranges with a step `A-BxS`;
/// negative frames are allowed (`-5--1`).
pub fn parse_frames(list: &str) -> Result<Vec<i32>, FrameListError> {
    let fail = |reason: String| FrameListError {
        list: list.to_string(),
        reason,
    };
    let mut frames = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(fail("an empty item".into()));
        }
        let (range, step) = match item.split_once(['x', 'X']) {
            Some((range, step)) => {
                let step: i64 = step
                    .trim()
                    .parse()
                    .map_err(|_| fail(format!("'{step}' in '{item}' is not a step")))?;
                if step < 1 {
                    return Err(fail(format!("the step in '{item}' must be at least 1")));
                }
                (range.trim(), step)
            }
            None => (item, 1),
        };
        // The separating dash is the first one after the first character, so
        // a leading minus sign belongs to the start.
        let split = range
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '-')
            .map(|(at, _)| at);
        let number = |text: &str| -> Result<i64, FrameListError> {
            let value: i64 = text.trim().parse().map_err(|_| {
                fail(format!(
                    "'{}' in '{item}' is not a frame number",
                    text.trim()
                ))
            })?;
            let (lowest, highest) = (*FRAME_RANGE.start(), *FRAME_RANGE.end());
            if value < i64::from(lowest) || value > i64::from(highest) {
                return Err(fail(format!(
                    "frame {value} is outside Blender's range {lowest}..{highest}"
                )));
            }
            Ok(value)
        };
        let (start, end) = match split {
            Some(at) => (number(&range[..at])?, number(&range[at + 1..])?),
            None => {
                let single = number(range)?;
                (single, single)
            }
        };
        if start > end {
            return Err(fail(format!("'{item}' runs backwards")));
        }
        let count = (end - start) / step + 1;
        if frames.len() as i64 + count > MAX_FRAMES as i64 {
            return Err(fail(format!("more than {MAX_FRAMES} frames")));
        }
        // Counting steps, not adding them: `start + step` past `end` can
        // overflow (`1x9223372036854775807`), `start + i * step` up to
        // `count` cannot. In range: checked against FRAME_RANGE above.
        frames.extend((0..count).map(|i| (start + i * step) as i32));
    }
    frames.sort_unstable();
    frames.dedup();
    Ok(frames)
}

/// Writes frames back as a short list: `1-24,30,40`.
pub fn format_frames(frames: &[i32]) -> String {
    let mut parts = Vec::new();
    let mut iter = frames.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_singles_and_steps() {
        assert_eq!(parse_frames("1-3,7").unwrap(), vec![1, 2, 3, 7]);
        assert_eq!(
            parse_frames("40-50x2").unwrap(),
            vec![40, 42, 44, 46, 48, 50]
        );
        assert_eq!(parse_frames(" 5 , 1-2 ,5").unwrap(), vec![1, 2, 5]);
        assert_eq!(parse_frames("0-2").unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_frames("-3--1").unwrap(), vec![-3, -2, -1]);
        assert_eq!(parse_frames("-2-1").unwrap(), vec![-2, -1, 0, 1]);
        assert_eq!(parse_frames("1-24,30,40-50x2").unwrap().len(), 24 + 1 + 6);
    }

    #[test]
    fn steps_past_the_end_do_not_overflow() {
        // The last step used to be added past the end anyway, which
        // overflowed: a panic in debug builds, frames -1 and 0 in release.
        assert_eq!(parse_frames("1x9223372036854775807").unwrap(), vec![1]);
        assert_eq!(
            parse_frames("-5-1048574x9223372036854775807").unwrap(),
            vec![-5]
        );
        assert_eq!(parse_frames("1-10x1000000000000").unwrap(), vec![1]);
        assert_eq!(
            parse_frames("1048570-1048574x3").unwrap(),
            vec![1048570, 1048573]
        );
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        for (list, reason) in [
            ("", "empty item"),
            ("1,,2", "empty item"),
            ("a", "'a' in 'a' is not a frame number"),
            ("5-1", "runs backwards"),
            ("1-10x0", "at least 1"),
            ("1-10xq", "not a step"),
            ("99999999", "outside Blender's range"),
            ("-1048574-1048574", "more than"),
            ("1-", "is not a frame number"),
        ] {
            let err = parse_frames(list).unwrap_err();
            assert!(err.to_string().contains(reason), "{list}: {err}");
        }
    }

    #[test]
    fn formats_back_compactly() {
        assert_eq!(format_frames(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(format_frames(&[]), "");
    }
}
