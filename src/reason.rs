//! Errors that are a reason in words: the seam is typed (a caller matches
//! on the type, not on a message prefix) while the text stays what the
//! user reads.

/// `reason_error!(Name, "doc")`: a `Name(pub String)` error that displays
/// its reason and converts from `String` and `&str`, so `?` and
/// `.ok_or("...")?` work in functions returning it.
macro_rules! reason_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("{0}")]
        pub struct $name(pub String);

        impl From<String> for $name {
            fn from(reason: String) -> Self {
                Self(reason)
            }
        }

        impl From<&str> for $name {
            fn from(reason: &str) -> Self {
                Self(reason.into())
            }
        }
    };
}

pub(crate) use reason_error;
