//! Paging: one page as a [`Page`], or every item of every page as an [`ItemStream`] that
//! fetches the next page only when the items before it have been consumed.
//!
//! Parley's List methods take `page_size` (default 50, at most 1,000) and an opaque
//! `page_token`, and page by key, so a page costs the same at any depth.

use std::future::Future;

use futures::{
    StreamExt, TryStreamExt,
    stream::{self, BoxStream},
};

use crate::error::Error;

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page<T> {
    /// The items of this page, in the listing's order.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    pub(crate) fn new(items: Vec<T>, next_page_token: String) -> Self {
        Self {
            items,
            next_page_token: (!next_page_token.is_empty()).then_some(next_page_token),
        }
    }

    /// Whether more pages follow.
    pub fn has_more(&self) -> bool {
        self.next_page_token.is_some()
    }
}

impl<T> IntoIterator for Page<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Every item of a listing, across all its pages; the first error ends it.
///
/// ```no_run
/// # async fn demo(client: parley_sdk::Client) -> Result<(), parley_sdk::Error> {
/// use futures::TryStreamExt;
/// use parley_sdk::ListParticipants;
///
/// let mut participants = client
///     .participants()
///     .list_stream(ListParticipants::new("0190c7e2-…").page_size(200));
/// while let Some(p) = participants.try_next().await? {
///     println!("{} ({:?})", p.user_id, p.role());
/// }
/// # Ok(()) }
/// ```
pub type ItemStream<T> = BoxStream<'static, Result<T, Error>>;

/// Where a listing stands between pages.
enum Cursor<F> {
    /// Fetch the page at this token next ("" for the first).
    At(F, String),
    Done,
}

/// Streams the items of the pages `fetch` returns, starting at `page_token`, calling `fetch`
/// again with each page's next token until a page has none.
pub(crate) fn items<T, F, Fut>(page_token: Option<String>, fetch: F) -> ItemStream<T>
where
    T: Send + 'static,
    F: FnMut(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, Error>> + Send + 'static,
{
    let start = Cursor::At(fetch, page_token.unwrap_or_default());
    stream::try_unfold(start, |cursor| async move {
        let Cursor::At(mut fetch, token) = cursor else {
            return Ok(None);
        };
        let page = fetch(token.clone()).await?;
        let next = match page.next_page_token {
            // A server repeating a token would make this loop forever.
            Some(next) if next == token => {
                return Err(Error::Other {
                    status: tonic::Status::internal(
                        "the server returned the page token it was given",
                    ),
                });
            }
            Some(next) => Cursor::At(fetch, next),
            None => Cursor::Done,
        };
        Ok(Some((page.items, next)))
    })
    .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

/// The `page_size` and `page_token` setters every List request builder has.
macro_rules! paged {
    ($builder:ident) => {
        impl $builder {
            /// Items per page (the server's default is 50, its maximum 1,000).
            pub fn page_size(mut self, page_size: u32) -> Self {
                self.page_size = i32::try_from(page_size).unwrap_or(i32::MAX);
                self
            }

            /// Starts at the page this token (from [`Page::next_page_token`]) names.
            ///
            /// [`Page::next_page_token`]: crate::Page::next_page_token
            pub fn page_token(mut self, page_token: impl Into<String>) -> Self {
                self.page_token = Some(page_token.into()).filter(|t| !t.is_empty());
                self
            }
        }
    };
}
pub(crate) use paged;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    /// A fake listing of 0..n in pages of `size`, counting fetches.
    fn numbers(n: u32, size: u32, fetches: Arc<AtomicUsize>) -> ItemStream<u32> {
        items(None, move |token: String| {
            fetches.fetch_add(1, Ordering::SeqCst);
            let start: u32 = token.parse().unwrap_or(0);
            let end = (start + size).min(n);
            let next = if end < n {
                end.to_string()
            } else {
                String::new()
            };
            async move { Ok(Page::new((start..end).collect(), next)) }
        })
    }

    #[tokio::test]
    async fn streams_every_item_fetching_pages_lazily() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut stream = numbers(250, 50, fetches.clone());
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            0,
            "nothing before the first poll"
        );
        let first: Vec<u32> = stream.by_ref().take(50).try_collect().await.expect("items");
        assert_eq!(first, (0..50).collect::<Vec<_>>());
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one page so far");
        let rest: Vec<u32> = stream.try_collect().await.expect("items");
        assert_eq!(rest, (50..250).collect::<Vec<_>>());
        assert_eq!(fetches.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn an_error_ends_the_stream() {
        let mut calls = 0;
        let stream = items(None, move |_token: String| {
            calls += 1;
            let result = if calls == 1 {
                Ok(Page::new(vec![1, 2], "next".to_owned()))
            } else {
                Err(Error::from_status(tonic::Status::unavailable("down")))
            };
            async move { result }
        });
        let got: Vec<Result<i32, Error>> = stream.collect().await;
        assert_eq!(got.len(), 3);
        assert!(matches!(got[2], Err(Error::Unavailable { .. })));
    }

    #[tokio::test]
    async fn a_repeated_token_is_an_error_not_a_loop() {
        let stream = items(None, |_token: String| async {
            Ok(Page::new(vec![1], "same".to_owned()))
        });
        let got: Vec<Result<i32, Error>> = stream.take(10).collect().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[1].is_err());
    }
}
