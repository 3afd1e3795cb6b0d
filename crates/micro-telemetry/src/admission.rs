//! [`AdmissionTelemetry`]: admission control's metrics
//! (`micro_admission_refused_total{scope,reason}`, `micro_admission_limit`,
//! `micro_admission_in_flight`), for a server (scope: its service name;
//! [`ServerTelemetry`](crate::server) gives it one) and the gateway (scope
//! `api`).
//!
//! ```
//! use micro_serve::admission::{Admission, ConcurrencyLimit};
//! use micro_telemetry::admission::AdmissionTelemetry;
//!
//! let admission = Admission::new(
//!     ConcurrencyLimit::Fixed(1),
//!     Some(AdmissionTelemetry::new("doc.example")),
//! )
//! .unwrap();
//! let _held = admission.try_acquire().unwrap();
//! assert!(admission.try_acquire().is_err());
//! let text = micro_telemetry::metrics::encode();
//! assert!(text.contains(r#"micro_admission_refused_total{reason="shed",scope="doc.example"} 1"#));
//! assert!(text.contains(r#"micro_admission_in_flight{scope="doc.example"} 1"#));
//! ```

use std::sync::Arc;

use micro_serve::admission::{AdmissionObserver, Refusal};
use prometheus::{IntCounter, IntGauge};

use crate::metrics::metrics;

/// The metrics of one scope's admission, resolved once.
#[derive(Debug)]
pub struct AdmissionTelemetry {
    shed: IntCounter,
    expired: IntCounter,
    limit: IntGauge,
    in_flight: IntGauge,
}

impl AdmissionTelemetry {
    /// For the admission of `scope` (a service name, or `api`).
    pub fn new(scope: &str) -> Arc<Self> {
        let m = metrics();
        Arc::new(AdmissionTelemetry {
            shed: m.admission_refused.with_label_values(&[scope, "shed"]),
            expired: m.admission_refused.with_label_values(&[scope, "expired"]),
            limit: m.admission_limit.with_label_values(&[scope]),
            in_flight: m.admission_in_flight.with_label_values(&[scope]),
        })
    }
}

impl AdmissionObserver for AdmissionTelemetry {
    fn refused(&self, refusal: Refusal) {
        match refusal {
            Refusal::Shed => self.shed.inc(),
            Refusal::Expired => self.expired.inc(),
        }
    }

    fn limit(&self, limit: usize) {
        self.limit.set(limit as i64);
    }

    fn in_flight(&self, in_flight: usize) {
        self.in_flight.set(in_flight as i64);
    }
}
