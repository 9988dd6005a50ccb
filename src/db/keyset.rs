//! Keyset pagination for the admin lists: a page is "the newest rows" or "the rows just
//! older / just newer than this key", never an `OFFSET`, so page 2 000 costs what page 1
//! costs however large the table grows.

/// Which page of a newest-first list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyset<K> {
    /// The newest rows.
    First,
    /// The rows just older than this key (the "Older" link).
    Before(K),
    /// The rows just newer than this key (the "Newer" link).
    After(K),
}

/// One page of rows, newest first, with the keys of the neighbouring pages.
#[derive(Debug, Clone)]
pub struct Page<T, K> {
    pub rows: Vec<T>,
    /// Key for the next older page, when there is one.
    pub older: Option<K>,
    /// Key for the next newer page, when there is one.
    pub newer: Option<K>,
}

impl<T, K: Copy> Page<T, K> {
    /// Builds a page from up to `limit + 1` rows read in the keyset's direction (newest
    /// first for `First` and `Before`, oldest first for `After`): the extra row only says
    /// that another page exists.
    pub fn from_rows(
        mut rows: Vec<T>,
        keyset: Keyset<K>,
        limit: usize,
        key: impl Fn(&T) -> K,
    ) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        if matches!(keyset, Keyset::After(_)) {
            rows.reverse();
        }
        let (older_exists, newer_exists) = match keyset {
            Keyset::First => (more, false),
            Keyset::Before(_) => (more, true),
            Keyset::After(_) => (true, more),
        };
        let older = rows.last().filter(|_| older_exists).map(&key);
        let newer = rows.first().filter(|_| newer_exists).map(&key);
        Page { rows, older, newer }
    }
}

/// Reads a page with `load` (given the keyset to read; it returns up to `limit + 1` rows in
/// that keyset's direction). A "Newer" page that comes back short has reached the newest
/// rows (some may have gone since the link was made, like sent mail leaving the queue):
/// the first page is served instead, so "Newer" never leads to a short page or a dead end.
pub fn read<T, K: Copy, E>(
    keyset: Keyset<K>,
    limit: usize,
    key: impl Fn(&T) -> K,
    mut load: impl FnMut(Keyset<K>) -> Result<Vec<T>, E>,
) -> Result<Page<T, K>, E> {
    let rows = load(keyset)?;
    if matches!(keyset, Keyset::After(_)) && rows.len() < limit {
        return Ok(Page::from_rows(
            load(Keyset::First)?,
            Keyset::First,
            limit,
            key,
        ));
    }
    Ok(Page::from_rows(rows, keyset, limit, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_page_links_only_to_older_rows_when_there_are_more() {
        let page = Page::from_rows(vec![9, 8, 7], Keyset::First, 2, |r| *r);
        assert_eq!(page.rows, vec![9, 8]);
        assert_eq!(page.older, Some(8));
        assert_eq!(page.newer, None);
        let last = Page::from_rows(vec![9, 8], Keyset::First, 2, |r| *r);
        assert_eq!(last.older, None);
    }

    #[test]
    fn a_newer_page_is_read_backwards_and_shown_newest_first() {
        // Rows newer than 5, read oldest first: 6, 7, 8 (limit 2 → 6, 7 shown, more exist).
        let page = Page::from_rows(vec![6, 7, 8], Keyset::After(5), 2, |r| *r);
        assert_eq!(page.rows, vec![7, 6]);
        assert_eq!(page.newer, Some(7));
        assert_eq!(page.older, Some(6));
        let top = Page::from_rows(vec![6, 7], Keyset::After(5), 2, |r| *r);
        assert_eq!(top.newer, None);
    }

    #[test]
    fn a_short_newer_page_becomes_the_first_page() {
        let rows = [9, 8, 7, 6, 5];
        let load = |k: Keyset<i32>| -> Result<Vec<i32>, ()> {
            Ok(match k {
                Keyset::First => rows.iter().copied().take(3).collect(),
                Keyset::After(n) => rows
                    .iter()
                    .rev()
                    .copied()
                    .filter(|r| *r > n)
                    .take(3)
                    .collect(),
                Keyset::Before(n) => rows.iter().copied().filter(|r| *r < n).take(3).collect(),
            })
        };
        let page = read(Keyset::After(8), 2, |r| *r, load).unwrap_or_else(|_| unreachable!());
        assert_eq!(page.rows, vec![9, 8]);
        assert_eq!((page.newer, page.older), (None, Some(8)));
    }

    #[test]
    fn an_empty_page_links_nowhere() {
        let page: Page<i64, i64> = Page::from_rows(vec![], Keyset::Before(3), 2, |r| *r);
        assert!(page.rows.is_empty());
        assert_eq!((page.older, page.newer), (None, None));
    }
}
