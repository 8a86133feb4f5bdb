//! Which parts of a spooled recording go to object storage, and when.
//!
//! A recording is cut into fixed-size parts: part `i` holds the bytes
//! `i * part_size .. (i + 1) * part_size` of the spool file, the last part
//! whatever remains. While the call runs, every part after the first is
//! uploaded as soon as it is completely written; the first part is held
//! back until the end because the header a writer patches at the end (a
//! WAV's sizes) lives there (decision 0010). At the end, whatever is not
//! uploaded yet, plus any uploaded part a patch touched, goes up, the first
//! part last.
//!
//! Sans-IO: sizes in, part numbers out.

use std::collections::BTreeMap;
use std::ops::Range;

/// The bytes of part `idx` in a file of `size` bytes.
pub fn part_range(idx: usize, part_size: u64, size: u64) -> Range<u64> {
    let start = (idx as u64).saturating_mul(part_size).min(size);
    let end = start.saturating_add(part_size).min(size);
    start..end
}

/// How many parts a file of `size` bytes has (at least one, possibly empty).
pub fn part_count(part_size: u64, size: u64) -> usize {
    (size.div_ceil(part_size.max(1)) as usize).max(1)
}

/// The next part that can be uploaded while the recording is still being
/// written: the lowest part after the first that is completely written
/// (`written` bytes so far) and not uploaded yet.
pub fn ready_while_recording<V>(part_size: u64, written: u64, uploaded: &BTreeMap<usize, V>) -> Option<usize> {
    let idx = next_wanted(uploaded);
    let end = (idx as u64 + 1).saturating_mul(part_size);
    (end <= written).then_some(idx)
}

/// Where the next part to upload while recording ends: the spool writer
/// wakes the uploader once this much has been written.
pub fn next_boundary<V>(part_size: u64, uploaded: &BTreeMap<usize, V>) -> u64 {
    (next_wanted(uploaded) as u64 + 1).saturating_mul(part_size)
}

fn next_wanted<V>(uploaded: &BTreeMap<usize, V>) -> usize {
    (1..).find(|i| !uploaded.contains_key(i)).unwrap_or(usize::MAX)
}

/// The earlier uploads no longer fit the file: start a new upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOver;

/// The parts to upload once the recording is finished, in order, the first
/// part last: every part not uploaded yet and every uploaded part that
/// `patched` (bytes rewritten after they were written) overlaps.
pub fn remaining<V>(part_size: u64, size: u64, uploaded: &BTreeMap<usize, V>, patched: Option<Range<u64>>) -> Result<Vec<usize>, StartOver> {
    let count = part_count(part_size, size);
    // An uploaded part must still be a whole part of the file: the file
    // only grows while recording, so anything else means the spool file is
    // not the one these parts came from.
    if uploaded.keys().any(|&i| i >= count || part_range(i, part_size, size).end - part_range(i, part_size, size).start != part_size) {
        return Err(StartOver);
    }
    let touched = |i: usize| {
        let r = part_range(i, part_size, size);
        patched.as_ref().is_some_and(|p| p.start < r.end && r.start < p.end)
    };
    let mut out: Vec<usize> = (1..count).filter(|&i| !uploaded.contains_key(&i) || touched(i)).collect();
    out.push(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(parts: &[usize]) -> BTreeMap<usize, ()> {
        parts.iter().map(|&i| (i, ())).collect()
    }

    #[test]
    fn parts_cover_the_file_and_the_last_takes_the_rest() {
        assert_eq!(part_range(0, 10, 25), 0..10);
        assert_eq!(part_range(2, 10, 25), 20..25);
        assert_eq!(part_range(3, 10, 25), 25..25);
        assert_eq!(part_count(10, 25), 3);
        assert_eq!(part_count(10, 30), 3);
        assert_eq!(part_count(10, 0), 1);
    }

    #[test]
    fn the_first_part_is_held_back_while_recording() {
        // 15 bytes of parts of 10: part 0 is complete but held back.
        assert_eq!(ready_while_recording(10, 15, &up(&[])), None);
        assert_eq!(ready_while_recording(10, 20, &up(&[])), Some(1));
        assert_eq!(ready_while_recording(10, 35, &up(&[1])), Some(2));
        assert_eq!(ready_while_recording(10, 35, &up(&[1, 2])), None);
        assert_eq!(next_boundary(10, &up(&[1, 2])), 40);
        assert_eq!(next_boundary(10, &up(&[])), 20);
    }

    #[test]
    fn at_the_end_the_rest_goes_up_with_the_first_part_last() {
        assert_eq!(remaining(10, 35, &up(&[1, 2]), Some(0..8)), Ok(vec![3, 0]));
        assert_eq!(remaining(10, 35, &up(&[]), None), Ok(vec![1, 2, 3, 0]));
        assert_eq!(remaining(10, 5, &up(&[]), None), Ok(vec![0]));
        assert_eq!(remaining(10, 30, &up(&[1, 2]), None), Ok(vec![0]));
    }

    #[test]
    fn a_patch_over_an_uploaded_part_sends_it_again() {
        assert_eq!(remaining(10, 35, &up(&[1, 2]), Some(18..22)), Ok(vec![1, 2, 3, 0]));
        assert_eq!(remaining(10, 35, &up(&[1, 2]), Some(20..21)), Ok(vec![2, 3, 0]));
        assert_eq!(remaining(10, 35, &up(&[1, 2]), Some(10..10)), Ok(vec![3, 0]), "an empty patch touches nothing");
    }

    #[test]
    fn uploads_that_do_not_fit_the_file_start_over() {
        assert_eq!(remaining(10, 15, &up(&[1]), None), Err(StartOver), "part 1 would be short now");
        assert_eq!(remaining(10, 15, &up(&[4]), None), Err(StartOver));
    }
}
