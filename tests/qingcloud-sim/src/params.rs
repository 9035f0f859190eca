//! Request parameters, decoded from a query string or a form body exactly as the real server
//! must: `+` and `%20` both mean space, and the signature is checked over the decoded values
//! re-canonicalized, never over the raw text.

use std::collections::BTreeMap;

use crate::api_error::ApiError;

/// Decoded parameters of one request, keyed by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    /// Decodes `application/x-www-form-urlencoded` text (also a query string). Invalid
    /// escapes, invalid UTF-8 and repeated keys are 1100.
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)?;
            let v = decode(v)?;
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::invalid(&k, "given more than once"));
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A present, non-empty value, else 1100.
    pub(crate) fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::missing(key))
    }

    /// The elements of list parameter `name` (`name.1`, `name.2`, ...) in index order.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let mut items: Vec<(u64, &String)> = self
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| Some((k[prefix.len()..].parse::<u64>().ok()?, v)))
            .collect();
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// A non-empty list parameter, else 1100 naming `name.1`.
    pub(crate) fn required_list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let items = self.list(name);
        if items.is_empty() {
            return Err(ApiError::missing(&format!("{name}.1")));
        }
        Ok(items)
    }

    /// An integer parameter, `default` when absent; 1100 when not an integer.
    pub(crate) fn int(&self, key: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::invalid(key, "not an integer")),
        }
    }

    /// A 0/1 flag parameter.
    pub(crate) fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.int(key, 0)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ApiError::invalid(key, "must be 0 or 1")),
        }
    }

    /// Every parameter except `signature`, as signed by the client.
    pub(crate) fn signed_pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() != "signature")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Percent-decoding with `+` as space; 1100 on a bad escape or non-UTF-8 result.
fn decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid(s, "bad percent-encoding");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent_as_space() {
        let p = Params::parse("a=x+y&b=x%20y&c=%CE%B1%2F&d=&e").unwrap();
        assert_eq!(p.get("a"), Some("x y"));
        assert_eq!(p.get("b"), Some("x y"));
        assert_eq!(p.get("c"), Some("α/"));
        assert_eq!(p.get("d"), Some(""));
        assert_eq!(p.get("e"), Some(""));
    }

    #[test]
    fn rejects_bad_escapes_and_duplicates() {
        assert!(Params::parse("a=%4").is_err());
        assert!(Params::parse("a=%zz").is_err());
        assert!(Params::parse("a=%FF").is_err());
        assert!(Params::parse("a=1&a=2").is_err());
    }

    #[test]
    fn lists_in_numeric_order() {
        let p = Params::parse("nics.10=j&nics.2=b&nics.1=a&nicsx=1&nics.x=2").unwrap();
        let all: Vec<String> = ["a", "b", "j"].map(String::from).into();
        assert_eq!(p.list("nics"), all);
        assert!(p.list("vxnets").is_empty());
        assert_eq!(p.required_list("vxnets").unwrap_err().code.0, 1100);
    }

    #[test]
    fn integers_and_flags() {
        let p = Params::parse("limit=7&bad=x&f=1&g=2").unwrap();
        assert_eq!(p.int("limit", 20).unwrap(), 7);
        assert_eq!(p.int("offset", 0).unwrap(), 0);
        assert!(p.int("bad", 0).is_err());
        assert!(p.flag("f").unwrap());
        assert!(p.flag("g").is_err());
        assert!(!p.flag("h").unwrap());
    }

    #[test]
    fn signed_pairs_drop_signature() {
        let p = Params::parse("a=1&signature=zz&b=2").unwrap();
        assert_eq!(
            p.signed_pairs(),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }
}
