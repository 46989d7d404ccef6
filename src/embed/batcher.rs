//! Batching for a server: texts from concurrent requests are embedded together, as
//! text-embeddings-inference does. One thread takes whatever has queued while the previous batch
//! ran (no added wait), up to `max_batch` texts, and embeds them in one forward pass. A short
//! query alone is a tiny matrix product whose threading overhead dominates; sixteen together
//! cost little more than one.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{EmbedError, Embedder};

type Job = (String, oneshot::Sender<Result<Vec<f32>, String>>);

/// A handle to the batching thread; cheap to share.
pub struct EmbedBatcher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl EmbedBatcher {
    /// Start the batching thread over `embedder`. It ends when the batcher is dropped.
    pub fn spawn(embedder: Arc<Embedder>, max_batch: usize) -> Self {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name("embed-batcher".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < max_batch {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let texts: Vec<&str> = batch.iter().map(|(t, _)| t.as_str()).collect();
                    match embedder.embed(&texts) {
                        Ok(vectors) => {
                            for ((_, reply), v) in batch.into_iter().zip(vectors) {
                                let _ = reply.send(Ok(v));
                            }
                        }
                        Err(e) => {
                            let message = e.to_string();
                            for (_, reply) in batch {
                                let _ = reply.send(Err(message.clone()));
                            }
                        }
                    }
                }
            })
            .expect("the embedding batcher's thread starts");
        Self { jobs }
    }

    /// The vector of `text`, embedded in a batch with whatever else is waiting. The caller
    /// bounds how many wait (the API's admission control).
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self
            .embed_many(&[text])
            .await?
            .pop()
            .expect("one vector per text"))
    }

    /// The vectors of `texts`, in order: all queued at once, so they share batches.
    pub async fn embed_many(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let stopped = || EmbedError::Batcher("the batching thread has stopped".into());
        let mut answers = Vec::with_capacity(texts.len());
        for text in texts {
            let (reply, answer) = oneshot::channel();
            self.jobs
                .send((text.to_string(), reply))
                .map_err(|_| stopped())?;
            answers.push(answer);
        }
        let mut out = Vec::with_capacity(texts.len());
        for answer in answers {
            out.push(
                answer
                    .await
                    .map_err(|_| stopped())?
                    .map_err(EmbedError::Batcher)?,
            );
        }
        Ok(out)
    }
}
