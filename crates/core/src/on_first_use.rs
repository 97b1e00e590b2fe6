//! An AWS SDK client built the first time it is used, not when the adapter
//! holding it is. Building one costs its service's endpoint partitions
//! parsed from JSON and its runtime plugins set up; a function builds ten
//! at start and a request uses one or two, so building them all at init
//! was most of a cold start's own time (`scripts/bench-lambda`).

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use aws_config::SdkConfig;

/// A client of type `C`, made from `config` by `make` on first use and
/// shared by every clone from then on. Derefs to the client.
pub struct OnFirstUse<C> {
    inner: Arc<Inner<C>>,
}

/// How a client is made: from this config, by this function.
type Make<C> = (SdkConfig, fn(&SdkConfig) -> C);

struct Inner<C> {
    /// What it is made from; `None` for a client given ready.
    source: Option<Make<C>>,
    client: OnceLock<C>,
}

impl<C> OnFirstUse<C> {
    pub fn new(config: &SdkConfig, make: fn(&SdkConfig) -> C) -> Self {
        Self {
            inner: Arc::new(Inner {
                source: Some((config.clone(), make)),
                client: OnceLock::new(),
            }),
        }
    }

    /// A client already built (tests, and callers that have one).
    pub fn ready(client: C) -> Self {
        Self {
            inner: Arc::new(Inner {
                source: None,
                client: OnceLock::from(client),
            }),
        }
    }

    /// Whether it has been built yet.
    pub fn is_built(&self) -> bool {
        self.inner.client.get().is_some()
    }
}

impl<C> Deref for OnFirstUse<C> {
    type Target = C;

    fn deref(&self) -> &C {
        let inner = &*self.inner;
        inner.client.get_or_init(|| {
            let (config, make) = inner
                .source
                .as_ref()
                .expect("a client given ready is set from the start");
            make(config)
        })
    }
}

impl<C> Clone for OnFirstUse<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> fmt::Debug for OnFirstUse<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnFirstUse")
            .field("built", &self.is_built())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static MADE: AtomicUsize = AtomicUsize::new(0);

    fn count(config: &SdkConfig) -> Option<String> {
        MADE.fetch_add(1, Ordering::SeqCst);
        config.region().map(|r| r.to_string())
    }

    #[test]
    fn a_client_is_made_once_on_first_use_and_shared_by_its_clones() {
        let config = SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        let lazy = OnFirstUse::new(&config, count);
        let clone = lazy.clone();
        assert!(!lazy.is_built());
        assert_eq!(MADE.load(Ordering::SeqCst), 0, "nothing made up front");
        assert_eq!(clone.as_deref(), Some("eu-west-1"));
        assert_eq!(lazy.as_deref(), Some("eu-west-1"));
        assert!(lazy.is_built());
        assert_eq!(MADE.load(Ordering::SeqCst), 1, "made once for both");
    }

    #[test]
    fn a_ready_client_is_used_as_given() {
        let ready = OnFirstUse::ready(7_u8);
        assert!(ready.is_built());
        assert_eq!(*ready, 7);
    }
}
