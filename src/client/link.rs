//! Paging: the `cursor` of a `Link: <…>; rel="next"` header (RFC 8288).

use crate::percent;

/// The `cursor` of the `rel="next"` target of a `Link` header. A cursor
/// whose escapes do not decode is handed back as it came: the server made
/// it, and judges it on the next request.
pub(crate) fn next_cursor(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "").eq_ignore_ascii_case("rel=\"next\"") || p.trim() == "rel=next");
        if !is_next {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let (_, q) = url.split_once('?')?;
        q.split('&')
            .find_map(|kv| kv.strip_prefix("cursor="))
            .map(|c| percent::decode(c, true).unwrap_or_else(|_| c.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_cursor() {
        let link = r#"</api/processes?limit=2&cursor=1700000000000.01ABC%2D>; rel="next""#;
        assert_eq!(next_cursor(link).as_deref(), Some("1700000000000.01ABC-"));
        assert_eq!(next_cursor(r#"</x?cursor=a>; rel="prev""#), None);
        assert_eq!(
            next_cursor(r#"</x?cursor=a>; rel="prev", </x?cursor=b>; rel=next"#).as_deref(),
            Some("b")
        );
    }

    /// The hand-written decoder this replaced passed malformed escapes
    /// through; strict `percent::decode` refuses them, so the cursor is
    /// kept whole rather than half-decoded.
    #[test]
    fn a_cursor_that_does_not_decode_is_kept_as_sent() {
        assert_eq!(next_cursor("</x?cursor=a%20b>; rel=next").as_deref(), Some("a b"));
        assert_eq!(next_cursor("</x?cursor=a%zz%2>; rel=next").as_deref(), Some("a%zz%2"));
    }
}
