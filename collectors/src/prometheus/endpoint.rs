//! The frontend's and the worker's metrics endpoints as sources: scraped at
//! every phase boundary, kept whole for the per-phase server-side deltas.

use crate::phase::Snapshot;
use crate::prometheus::http::{Scrape, scrape};
use crate::source::{At, Fill, Opened, Probe, Source, SourceId};

pub(crate) const NO_URL: &str = "no metrics URL given";

/// A Prometheus endpoint; `url` is `None` when it is off or not given.
struct Endpoint {
    id: SourceId,
    url: Option<String>,
    slot: fn(&mut Snapshot) -> &mut Option<Scrape>,
}

pub(crate) fn probe_frontend(p: &Probe<'_>) -> Opened {
    probe(p, SourceId::Frontend, &p.cfg.frontend_metrics_url, |s| {
        &mut s.frontend
    })
}

pub(crate) fn probe_worker(p: &Probe<'_>) -> Opened {
    probe(p, SourceId::Worker, &p.cfg.worker_metrics_url, |s| {
        &mut s.worker
    })
}

/// Unreachable at start is recorded, but every snapshot scrapes again: the
/// worker may come up after the harness.
fn probe(
    p: &Probe<'_>,
    id: SourceId,
    url: &Option<String>,
    slot: fn(&mut Snapshot) -> &mut Option<Scrape>,
) -> Opened {
    let on = p.on(id);
    let result = match (url, on) {
        (_, false) => Ok(()),
        (None, true) => Err(NO_URL.to_string()),
        (Some(u), true) => {
            let s = scrape(u, p.cfg.metrics_timeout);
            if s.success {
                Ok(())
            } else {
                Err(s.error.unwrap_or_default())
            }
        }
    };
    let source = Endpoint {
        id,
        url: url.clone().filter(|_| on),
        slot,
    };
    Opened::new(source, on, result)
}

impl Source for Endpoint {
    fn id(&self) -> SourceId {
        self.id
    }

    fn read(&self, at: &At<'_>) -> Fill {
        let s = self.url.as_ref().map(|u| scrape(u, at.cfg.metrics_timeout));
        let slot = self.slot;
        Box::new(move |snap| *slot(snap) = s)
    }
}
