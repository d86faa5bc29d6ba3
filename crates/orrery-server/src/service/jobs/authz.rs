//! What a caller may do to one job, beyond its endpoint's permission:
//! workers confined to some queues touch only those queues' jobs, and only
//! admins cancel `command` jobs. Both fronts ask here.

use super::JobsService;
use crate::api::ApiError;
use crate::auth::Caller;

/// What the caller wants to do with the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// Read it, its runs or its logs; heartbeat, complete or fail it.
    Use,
    /// Cancel it.
    Cancel,
}

impl JobsService {
    /// Refuses (403) a job the caller may not act on. Costs a read only
    /// for confined workers and for non-admin cancels.
    pub async fn authorize_job(
        &self,
        caller: &Caller,
        id: &str,
        action: JobAction,
    ) -> Result<(), ApiError> {
        let confined = caller.queues.is_some();
        let cancel_check = action == JobAction::Cancel && !caller.is_admin();
        if !confined && !cancel_check {
            return Ok(());
        }
        let job = self.get_job(id).await?;
        caller.check_queue(&job.queue)?;
        if cancel_check && &*job.kind == "command" {
            return Err(ApiError::Forbidden(format!(
                "only admins may cancel command jobs ({} may not)",
                caller.name
            )));
        }
        Ok(())
    }

    /// [`JobsService::authorize_job`] for each of `ids`.
    pub async fn authorize_jobs<'a>(
        &self,
        caller: &Caller,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        if caller.queues.is_none() {
            return Ok(());
        }
        for id in ids {
            self.authorize_job(caller, id, JobAction::Use).await?;
        }
        Ok(())
    }
}
