//! IMDSv2 token validation on arbitrary tokens, keys and clocks: never panics, a token only
//! validates if it is exactly what the key issues for its expiry (and that expiry is still
//! ahead), a freshly issued token validates, and any one-character change to it does not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metadata_server::TokenKey;
use metadata_server::token::{MAX_TTL, MIN_TTL, TokenError};

fuzz_target!(|data: &[u8]| {
    if data.len() < 44 {
        return;
    }
    let (head, rest) = data.split_at(44);
    let key = TokenKey::from_bytes(head[..32].try_into().unwrap());
    let now = u64::from_le_bytes(head[32..40].try_into().unwrap());
    let ttl = u32::from_le_bytes(head[40..44].try_into().unwrap()) % MAX_TTL + MIN_TTL;
    let text = String::from_utf8_lossy(rest);

    // Whatever the client sends as a token.
    match key.validate(&text, now) {
        Ok(()) => {
            let t = text.trim();
            let expiry = u64::from_str_radix(&t[2..18], 16).expect("validated token");
            assert!(now < expiry);
            assert_eq!(
                key.issue(expiry - 1, 1),
                t,
                "only the key's own tokens validate"
            );
        }
        Err(TokenError::Malformed | TokenError::BadSignature | TokenError::Expired) => {}
    }
    // The same bytes as a secret (file or environment variable).
    let _ = TokenKey::from_hex(&text);

    // Issued tokens validate until they expire; a changed character never validates.
    if now < u64::MAX - u64::from(MAX_TTL) - 1 {
        let token = key.issue(now, ttl);
        assert_eq!(key.validate(&token, now), Ok(()));
        assert_eq!(
            key.validate(&token, now + u64::from(ttl)),
            Err(TokenError::Expired)
        );
        if let Some(&b) = rest.first() {
            let at = usize::from(b) % token.len();
            let mut forged = token.clone().into_bytes();
            forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
            let forged = String::from_utf8(forged).unwrap();
            assert!(key.validate(&forged, now).is_err(), "{forged}");
        }
    }
});
