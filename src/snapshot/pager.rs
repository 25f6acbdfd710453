//! Offset paging that notices when the list moved under it.
//!
//! Owns the follow-the-pages state machine of one paged list (organizations,
//! one organization's members, one desk's organizations, the desks): which
//! `start` to ask next, which received items are new, when the list is done.
//! It does no I/O, so the export's consumer drives it from whatever replies
//! arrive, and it is tested here against simulated concurrent deletions.
//!
//! Why: JSM pages by offset and gives no total. When an item *before* the
//! reader's position is deleted, everything behind it shifts left by one and
//! a plain reader skips a surviving item without noticing. So every page
//! after the first is asked from one position early (`covered - 1`): its
//! first item must be one already seen. If it is not (something before us was
//! deleted, or the overlap item itself was), the pager backs up by 1, 2, 4, …
//! positions until a page starts on a seen item, and carries on from there.
//! Surviving items keep their relative order, so a page that starts on a seen
//! item continues exactly where the covered prefix ends: nothing surviving is
//! missed, and duplicates (an insertion before us shifts right) are dropped by
//! key. The price is one repeated item per page (a page of 50 yields 49 new
//! items) and one extra request per deletion that shifted the list.

use std::collections::HashSet;
use std::hash::Hash;

/// Unanchored pages tolerated for one list before the export gives up: a
/// list that keeps shifting faster than it can be read is an error, not a
/// reason to loop forever.
pub(crate) const MAX_RESYNCS: u32 = 1000;

/// Anchored pages in a row that bring nothing new before the list is
/// called stuck (a server that ignores `start` repeats one page forever).
const MAX_STALLS: u32 = 3;

/// Why a list cannot be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unstable {
    /// The list kept shifting under deletions.
    Shifting { resyncs: u32 },
    /// The server's paging does not advance: an empty page that is not the
    /// last, pages that repeat what was read, more pages than items.
    Stuck(String),
}

/// Paging state of one list keyed by `K` (organization id, account id, …).
#[derive(Debug)]
pub(crate) struct Pager<K> {
    /// Keys of every item accepted so far (only once the list spans pages).
    seen: HashSet<K>,
    /// Server positions covered: the position just after the frontier item.
    covered: u64,
    /// How far before the overlap position the next request starts; 0 when
    /// the reader is in step with the list.
    back: u64,
    /// Ask the next page at `covered` without an overlap item: the server
    /// answered a page of one, from which an overlap read cannot progress.
    no_overlap: bool,
    done: bool,
    resyncs: u32,
    /// Pages accepted, and anchored non-last pages in a row with nothing new.
    pages: u64,
    stalls: u32,
    /// The furthest server position any page reached.
    reached: u64,
}

impl<K: Hash + Eq> Default for Pager<K> {
    fn default() -> Self {
        Pager {
            seen: HashSet::new(),
            covered: 0,
            back: 0,
            no_overlap: false,
            done: false,
            resyncs: 0,
            pages: 0,
            stalls: 0,
            reached: 0,
        }
    }
}

impl<K: Hash + Eq> Pager<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `start` of the next request, or `None` when the list is done.
    pub fn next_start(&self) -> Option<u64> {
        if self.done {
            None
        } else if self.covered == 0 || self.no_overlap {
            Some(self.covered)
        } else {
            Some((self.covered - 1).saturating_sub(self.back))
        }
    }

    /// Pages that had to be re-read because the list shifted.
    pub fn resyncs(&self) -> u32 {
        self.resyncs
    }

    /// Take the reply to the request at `start` (the last `next_start`).
    /// Returns the items not seen before, in server order.
    pub fn accept<T>(
        &mut self,
        start: u64,
        values: Vec<T>,
        is_last: bool,
        key: impl Fn(&T) -> K,
    ) -> Result<Vec<T>, Unstable> {
        self.pages += 1;
        if values.is_empty() && !is_last {
            return Err(Unstable::Stuck(format!(
                "the page at start={start} is empty but says it is not the last (isLastPage false)"
            )));
        }
        // A hard cap on the pages of one list, relative to what was read:
        // the list read twice over after every re-sync.
        let cap = 2 * (self.seen.len() as u64 + 1) * (u64::from(self.resyncs) + 1) + 2 * u64::from(MAX_STALLS);
        if self.pages > cap {
            return Err(Unstable::Stuck(format!(
                "{} pages for {} items: the paging does not advance",
                self.pages,
                self.seen.len()
            )));
        }
        // The whole list in one page: nothing to compare against, nothing
        // to remember.
        if start == 0 && self.covered == 0 && is_last {
            self.done = true;
            return Ok(values);
        }
        let trusted = start == 0 || (self.no_overlap && start == self.covered);
        let anchored = trusted || values.first().is_some_and(|first| self.seen.contains(&key(first)));
        if !anchored {
            // Something before our position disappeared: back up and look
            // for a page that starts on an item already seen.
            self.resyncs += 1;
            if self.resyncs > MAX_RESYNCS {
                return Err(Unstable::Shifting { resyncs: self.resyncs });
            }
            // Backing up past position 0 is pointless: 0 needs no anchor.
            self.back = self.back.saturating_mul(2).clamp(1, self.covered.max(1));
            self.no_overlap = false;
            return Ok(Vec::new());
        }
        let len = values.len() as u64;
        self.back = 0;
        self.covered = start + len;
        self.no_overlap = len <= 1;
        self.done = is_last;
        let fresh: Vec<T> = values.into_iter().filter(|v| self.seen.insert(key(v))).collect();
        // A page that reaches positions never read before yet brings nothing
        // new: the server ignores `start` (re-sync pages that catch up on
        // positions already read, and a page of one at the overlap position,
        // do not count).
        let beyond = start + len > self.reached.max(1);
        self.reached = self.reached.max(start + len);
        if !fresh.is_empty() {
            self.stalls = 0;
        } else if beyond && !is_last {
            self.stalls += 1;
        }
        if self.stalls >= MAX_STALLS {
            return Err(Unstable::Stuck(format!(
                "{} pages in a row up to start={start} repeat items already read: the site ignores `start`?",
                self.stalls
            )));
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Reads `list` with page cap `cap` through a pager, calling `mutate`
    /// on the list before every request after the first.
    fn read_all(list: &mut Vec<u64>, cap: usize, mut mutate: impl FnMut(&mut Vec<u64>, u64)) -> (Vec<u64>, u32) {
        let mut pager = Pager::new();
        let mut out = Vec::new();
        let mut requests = 0;
        while let Some(start) = pager.next_start() {
            if requests > 0 {
                mutate(list, start);
            }
            requests += 1;
            assert!(requests < 10_000, "pager does not terminate");
            let s = (start as usize).min(list.len());
            let end = (s + cap).min(list.len());
            let page = list[s..end].to_vec();
            let is_last = end >= list.len();
            out.extend(pager.accept(start, page, is_last, |v| *v).unwrap());
        }
        (out, requests)
    }

    #[test]
    fn unchanged_list_is_read_once_with_one_overlap_item_per_page() {
        for n in [0u64, 1, 49, 50, 51, 99, 100, 101, 1000] {
            let mut list: Vec<u64> = (1..=n).collect();
            let (out, requests) = read_all(&mut list, 50, |_, _| {});
            assert_eq!(out, list, "n={n}");
            let expected = if n <= 50 { 1 } else { 1 + (n - 50).div_ceil(49) };
            assert_eq!(requests as u64, expected, "n={n}");
        }
    }

    #[test]
    fn a_deletion_before_the_position_is_caught_with_one_extra_request() {
        let mut list: Vec<u64> = (1..=120).collect();
        let mut deleted = false;
        let (out, requests) = read_all(&mut list, 50, |l, start| {
            if !deleted && start > 0 {
                l.retain(|v| *v != 10);
                deleted = true;
            }
        });
        let expected: Vec<u64> = (1..=120).collect();
        // 10 was read before it was deleted; every other item exactly once.
        assert_eq!(out, expected);
        // 3 pages unchanged (50 + 49 + 21) plus one resync.
        assert_eq!(requests, 4);
    }

    #[test]
    fn deleting_the_overlap_item_itself_is_caught() {
        let mut list: Vec<u64> = (1..=150).collect();
        let mut step = 0;
        let (out, _) = read_all(&mut list, 50, |l, _| {
            step += 1;
            if step == 1 {
                l.retain(|v| *v != 50); // the frontier of page one
            }
        });
        // 50 was read before it went; everything else exactly once.
        assert_eq!(out, (1..=150).collect::<Vec<u64>>());
    }

    #[test]
    fn many_deletions_and_insertions_never_lose_a_survivor() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..200 {
            let n = rng.gen_range(0..400u64);
            let cap = rng.gen_range(2..60usize);
            let original: Vec<u64> = (1..=n).collect();
            let mut list = original.clone();
            let mut next_id = n + 1;
            let mut deleted = HashSet::new();
            let (out, _) = read_all(&mut list, cap, |l, _| {
                for _ in 0..rng.gen_range(0..4) {
                    if !l.is_empty() && rng.gen_bool(0.7) {
                        let i = rng.gen_range(0..l.len());
                        deleted.insert(l.remove(i));
                    } else {
                        // New items get higher ids and sort at the end,
                        // like organizations listed by id.
                        l.push(next_id);
                        next_id += 1;
                    }
                }
            });
            let got: HashSet<u64> = out.iter().copied().collect();
            assert_eq!(got.len(), out.len(), "round {round}: duplicates");
            for id in &original {
                if !deleted.contains(id) {
                    assert!(got.contains(id), "round {round}: survivor {id} missed");
                }
            }
        }
    }

    #[test]
    fn a_server_with_pages_of_one_still_progresses() {
        let mut list: Vec<u64> = (1..=5).collect();
        let (out, requests) = read_all(&mut list, 1, |_, _| {});
        assert_eq!(out, list);
        assert!(requests <= 10, "{requests}");
    }

    #[test]
    fn an_empty_page_that_claims_more_is_an_error() {
        let mut pager: Pager<u64> = Pager::new();
        let e = pager.accept(0, Vec::<u64>::new(), false, |v| *v).unwrap_err();
        assert!(matches!(&e, Unstable::Stuck(why) if why.contains("empty")), "{e:?}");
        let mut pager: Pager<u64> = Pager::new();
        pager.accept(0, vec![1, 2], false, |v| *v).unwrap();
        assert!(pager.accept(1, Vec::<u64>::new(), false, |v| *v).is_err());
    }

    #[test]
    fn a_server_that_ignores_start_is_an_error_not_a_loop() {
        let mut pager: Pager<u64> = Pager::new();
        let mut result = Ok(vec![]);
        for _ in 0..100 {
            let Some(start) = pager.next_start() else { panic!("ended as if complete") };
            result = pager.accept(start, vec![1, 2, 3], false, |v| *v);
            if result.is_err() {
                break;
            }
        }
        let e = result.unwrap_err();
        assert!(matches!(&e, Unstable::Stuck(why) if why.contains("ignores `start`")), "{e:?}");
        assert!(pager.pages <= 5, "{} pages", pager.pages);
    }

    #[test]
    fn a_list_that_never_settles_is_an_error() {
        let mut pager: Pager<u64> = Pager::new();
        pager.accept(0, vec![1, 2, 3], false, |v| *v).unwrap();
        let mut result = Ok(vec![]);
        for _ in 0..=MAX_RESYNCS {
            let start = pager.next_start().unwrap();
            // Always answer with items never seen, as if the list were
            // replaced wholesale between requests; never from position 0.
            let start = start.max(1);
            result = pager.accept(start, vec![1000 + start], false, |v| *v);
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }
}
