//! Micro-batching of the sender's bookkeeping.
//!
//! Hundreds of jobs are in flight at once, each needing a few PostgreSQL statements. A
//! [`Batcher`] lets each job ask for its own row while one task runs one statement for every
//! job that asked meanwhile: no job waits for a timer (a batch is whatever queued up while the
//! previous statement ran), and a busy sender makes a few hundred statements per second
//! instead of thousands of single-row commits.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// Why a batched statement failed; every job of the batch gets the same answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BatchError {
    pub message: String,
    /// A connection problem worth trying again later (see `careline_store::is_transient`).
    pub transient: bool,
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        Self { transient: careline_store::is_transient(&e), message: e.to_string() }
    }
}

type Pending<I, O> = (I, oneshot::Sender<Result<O, BatchError>>);

/// A handle to a batching task; cheap to clone.
pub struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<Pending<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the task: `run` gets up to `max` items and returns one result per item, in order.
    /// At most `parallel` statements run at once. The task ends when every handle is dropped.
    pub fn start<F, Fut>(name: &'static str, max: usize, parallel: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, BatchError>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending<I, O>>();
        let run = Arc::new(run);
        let permits = Arc::new(Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                let mut batch = vec![first];
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let run = Arc::clone(&run);
                tokio::spawn(async move {
                    let _permit = permit;
                    let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                    let size = items.len();
                    metrics::counter!("careline_sender_batches_total", "statement" => name).increment(1);
                    metrics::counter!("careline_sender_batched_jobs_total", "statement" => name).increment(size as u64);
                    match run(items).await {
                        Ok(results) if results.len() == size => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Ok(results) => {
                            let error = BatchError {
                                message: format!("{name}: {} results for {size} items", results.len()),
                                transient: false,
                            };
                            for reply in replies {
                                let _ = reply.send(Err(error.clone()));
                            }
                        }
                        Err(error) => {
                            for reply in replies {
                                let _ = reply.send(Err(error.clone()));
                            }
                        }
                    }
                });
            }
        });
        Self { tx }
    }

    /// Queues one item and waits for its result.
    pub async fn call(&self, item: I) -> Result<O, BatchError> {
        let (reply, result) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| BatchError { message: "batcher stopped".to_owned(), transient: true })?;
        result.await.map_err(|_| BatchError { message: "batch dropped".to_owned(), transient: true })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_queued_together_run_in_one_call_and_get_their_own_results() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let batcher = Batcher::start("test", 100, 1, move |items: Vec<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(items.len());
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        });
        let results = futures_util::future::join_all((0..50u32).map(|i| {
            let b = batcher.clone();
            async move { b.call(i).await }
        }))
        .await;
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(result.unwrap(), i as u32 * 2);
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 50);
        assert!(calls.len() < 50, "no batching happened: {calls:?}");
    }

    #[tokio::test]
    async fn a_failed_statement_fails_every_item_of_its_batch() {
        let batcher = Batcher::start("test", 10, 1, |_items: Vec<u32>| async {
            Err::<Vec<u32>, _>(BatchError { message: "down".into(), transient: true })
        });
        let error = batcher.call(1).await.unwrap_err();
        assert!(error.transient);
    }
}
