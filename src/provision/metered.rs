//! A provisioner that counts each call of the one it wraps, by kind and
//! outcome, so every kind is measured the same way in one place.

use async_trait::async_trait;

use super::{ProvisionError, Provisioner};
use crate::domain::{AccountName, Password};

/// Passes every call on to `inner` and counts its outcome.
pub(super) struct Metered {
    /// The kind's name, the metrics label.
    pub kind: &'static str,
    /// The provisioner that does the work.
    pub inner: Box<dyn Provisioner>,
}

impl Metered {
    fn count(&self, result: Result<(), ProvisionError>) -> Result<(), ProvisionError> {
        crate::metrics::provision_call(self.kind, &result);
        result
    }
}

#[async_trait]
impl Provisioner for Metered {
    async fn create(&self, name: &AccountName, password: &Password) -> Result<(), ProvisionError> {
        self.count(self.inner.create(name, password).await)
    }

    async fn set_password(
        &self,
        name: &AccountName,
        password: &Password,
    ) -> Result<(), ProvisionError> {
        self.count(self.inner.set_password(name, password).await)
    }

    async fn delete(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.count(self.inner.delete(name).await)
    }

    async fn disable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.count(self.inner.disable(name).await)
    }

    async fn enable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.count(self.inner.enable(name).await)
    }
}
