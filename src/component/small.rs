//! Short strings kept inline, for what the component holds per connection
//! or per user for as long as it lasts (at most 1 KiB per tracked
//! connection).
//!
//! Why not `String`: each would be its own small heap allocation, made in
//! the middle of a burst of work (a login storm) and left among whatever
//! that burst allocated and freed around it. Every 4 KiB page holding one
//! stays resident, so after the burst RSS stayed at most of its peak:
//! 4–5 KB per connection after 1,000 logins, for some 300 bytes of live
//! data, and `malloc_trim` could give little back. Inline, these strings
//! live in their map's table: one block, nothing scattered.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// The bare part of a full JID: the name of its user.
pub fn bare(fulljid: &str) -> &str {
    fulljid.split_once('/').map_or(fulljid, |(b, _)| b)
}

/// `name` when it must be kept: when it is not `fulljid`'s bare part (only
/// an item on active written by someone else says so). Kept this way, the
/// usual name costs nothing per connection.
pub fn odd_name(fulljid: &str, name: &str) -> Option<Box<str>> {
    (name != bare(fulljid)).then(|| name.into())
}

/// The name an [`odd_name`] stands for.
pub fn name_or_bare<'a>(odd: Option<&'a str>, fulljid: &'a str) -> &'a str {
    odd.unwrap_or_else(|| bare(fulljid))
}

/// A string stored inline when it has at most `N` bytes (`N` < 256), on the
/// heap otherwise. Hashes, compares and borrows as the `str` it holds, so a
/// map keyed by it is looked up with a `&str`.
#[derive(Clone)]
pub enum SmallStr<const N: usize> {
    Inline { len: u8, buf: [u8; N] },
    Heap(Box<str>),
}

/// Full and bare JIDs: most fit (47 bytes with the length and the tag).
pub type JidStr = SmallStr<46>;

/// Addresses: every IPv4 one and short IPv6 ones (24 bytes in all).
pub type IpStr = SmallStr<22>;

impl<const N: usize> SmallStr<N> {
    pub fn new(s: &str) -> SmallStr<N> {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= N => {
                let mut buf = [0u8; N];
                buf[..s.len()].copy_from_slice(s.as_bytes());
                SmallStr::Inline { len, buf }
            }
            _ => SmallStr::Heap(s.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Always valid: copied from a `str` whole. (Checking costs a
            // few nanoseconds on strings this short; no `unsafe` needed.)
            SmallStr::Inline { len, buf } => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            SmallStr::Heap(s) => s,
        }
    }
}

impl<const N: usize> Deref for SmallStr<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> Borrow<str> for SmallStr<N> {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> Hash for SmallStr<N> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // As `str` does: required by `Borrow<str>`.
        self.as_str().hash(h)
    }
}

impl<const N: usize> PartialEq for SmallStr<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> Eq for SmallStr<N> {}

impl<const N: usize> From<&str> for SmallStr<N> {
    fn from(s: &str) -> Self {
        SmallStr::new(s)
    }
}

impl<const N: usize> fmt::Debug for SmallStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for SmallStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn inline_when_short_heap_when_long_same_either_way() {
        assert_eq!(std::mem::size_of::<JidStr>(), 48);
        assert_eq!(std::mem::size_of::<IpStr>(), 24);
        let short = JidStr::new("alice@example.org/desk");
        assert!(matches!(short, SmallStr::Inline { .. }));
        let long_jid = format!("{}@example.org/{}", "a".repeat(30), "é".repeat(20));
        let long = JidStr::new(&long_jid);
        assert!(matches!(long, SmallStr::Heap(_)));
        let exact = "x".repeat(46);
        assert!(matches!(JidStr::new(&exact), SmallStr::Inline { .. }));
        assert_eq!(JidStr::new(&exact).as_str(), exact);
        assert_eq!(&*long, long_jid.as_str());
        assert_eq!(JidStr::new("").as_str(), "");
        let mut m: HashMap<JidStr, u8> = HashMap::new();
        m.insert(short.clone(), 1);
        m.insert(long, 2);
        assert_eq!(m.get("alice@example.org/desk"), Some(&1));
        assert_eq!(m.get(long_jid.as_str()), Some(&2));
        assert_eq!(short.to_string(), "alice@example.org/desk");
    }
}
