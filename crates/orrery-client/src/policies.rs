//! The Policies API: policies, versions, runs and data sources. JSON
//! documents (graphs, inputs, outputs, traces, data source definitions)
//! are passed as JSON text.

use crate::{Client, Error};
use orrery_proto::v1 as pb;

impl Client {
    pub async fn policy_create(
        &mut self,
        name: &str,
        description: &str,
    ) -> Result<pb::Policy, Error> {
        let r = pb::CreatePolicyRequest {
            name: name.into(),
            description: description.into(),
        };
        Ok(self.policies.create_policy(r).await?.into_inner())
    }

    pub async fn policy_list(&mut self) -> Result<Vec<pb::Policy>, Error> {
        Ok(self
            .policies
            .list_policies(pb::ListPoliciesRequest {})
            .await?
            .into_inner()
            .policies)
    }

    /// `id` is the policy's id or its name.
    pub async fn policy_get(&mut self, id: &str) -> Result<pb::Policy, Error> {
        Ok(self
            .policies
            .get_policy(pb::PolicyRef { id: id.into() })
            .await?
            .into_inner())
    }

    /// Changes the description and/or the allocation ((version, weight) pairs).
    pub async fn policy_update(
        &mut self,
        id: &str,
        description: Option<String>,
        allocation: Option<Vec<(u32, u64)>>,
    ) -> Result<pb::Policy, Error> {
        let r = pb::UpdatePolicyRequest {
            id: id.into(),
            description,
            set_allocation: allocation.is_some(),
            allocation: allocation
                .unwrap_or_default()
                .into_iter()
                .map(|(version, weight)| pb::PolicyWeight { version, weight })
                .collect(),
        };
        Ok(self.policies.update_policy(r).await?.into_inner())
    }

    pub async fn policy_delete(&mut self, id: &str) -> Result<(), Error> {
        self.policies
            .delete_policy(pb::PolicyRef { id: id.into() })
            .await?;
        Ok(())
    }

    /// Validates and stores `graph_json` as the policy's next version; it
    /// takes all traffic unless `inactive`.
    pub async fn policy_version_create(
        &mut self,
        id: &str,
        graph_json: &str,
        inactive: bool,
    ) -> Result<pb::PolicyVersion, Error> {
        let r = pb::CreatePolicyVersionRequest {
            policy_id: id.into(),
            graph_json: graph_json.into(),
            inactive,
            created_by: String::new(),
        };
        Ok(self.policies.create_version(r).await?.into_inner())
    }

    pub async fn policy_versions(&mut self, id: &str) -> Result<Vec<pb::PolicyVersion>, Error> {
        Ok(self
            .policies
            .list_versions(pb::PolicyRef { id: id.into() })
            .await?
            .into_inner()
            .versions)
    }

    pub async fn policy_version(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<pb::PolicyVersion, Error> {
        let r = pb::PolicyVersionRef {
            policy_id: id.into(),
            version,
        };
        Ok(self.policies.get_version(r).await?.into_inner())
    }

    /// A synchronous run: evaluated by the node, recorded, returned.
    /// Archives a version (refused while the allocation gives it weight).
    pub async fn policy_version_archive(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<pb::PolicyVersion, Error> {
        let r = pb::PolicyVersionRef {
            policy_id: id.into(),
            version,
        };
        Ok(self.policies.archive_version(r).await?.into_inner())
    }

    pub async fn policy_run(
        &mut self,
        id: &str,
        input_json: &str,
        version: Option<u32>,
        run_key: Option<String>,
    ) -> Result<pb::PolicyRun, Error> {
        let r = pb::RunPolicyRequest {
            policy_id: id.into(),
            input_json: input_json.into(),
            version,
            run_key,
            mode: None,
        };
        Ok(self.policies.run(r).await?.into_inner())
    }

    /// An asynchronous run: the input is checked and the run recorded as
    /// `running`; a `policy.run` job evaluates it. Poll [`Client::run_get`].
    pub async fn policy_run_async(
        &mut self,
        id: &str,
        input_json: &str,
        version: Option<u32>,
        run_key: Option<String>,
    ) -> Result<pb::PolicyRun, Error> {
        let r = pb::RunPolicyRequest {
            policy_id: id.into(),
            input_json: input_json.into(),
            version,
            run_key,
            mode: Some("async".into()),
        };
        Ok(self.policies.run(r).await?.into_inner())
    }

    pub async fn policy_run_batch(
        &mut self,
        id: &str,
        inputs_json: Vec<String>,
        version: Option<u32>,
    ) -> Result<pb::PolicyRunBatchResponse, Error> {
        let r = pb::PolicyRunBatchRequest {
            policy_id: id.into(),
            inputs_json,
            version,
        };
        Ok(self.policies.run_batch(r).await?.into_inner())
    }

    pub async fn run_get(&mut self, id: &str) -> Result<pb::PolicyRun, Error> {
        Ok(self
            .policies
            .get_run(pb::PolicyRunRef { id: id.into() })
            .await?
            .into_inner())
    }

    /// Sets (`Some(Some)`), clears (`Some(None)`) or keeps (`None`) the
    /// shadow version and the run retention (cluster version 5).
    pub async fn policy_settings(
        &mut self,
        id: &str,
        shadow_version: Option<Option<u32>>,
        run_retention_ms: Option<Option<u64>>,
    ) -> Result<pb::Policy, Error> {
        let r = pb::SetPolicySettingsRequest {
            id: id.into(),
            set_shadow_version: shadow_version.is_some(),
            shadow_version: shadow_version.flatten(),
            set_run_retention: run_retention_ms.is_some(),
            run_retention_ms: run_retention_ms.flatten(),
        };
        Ok(self.policies.set_policy_settings(r).await?.into_inner())
    }

    /// Live and shadow outputs compared over a page of shadowed runs.
    pub async fn policy_shadow_compare(
        &mut self,
        req: pb::CompareShadowRequest,
    ) -> Result<pb::ShadowComparison, Error> {
        Ok(self.policies.compare_shadow(req).await?.into_inner())
    }

    /// Newest first; pass the returned cursor to get the next page.
    pub async fn runs_list(
        &mut self,
        req: pb::ListPolicyRunsRequest,
    ) -> Result<pb::ListPolicyRunsResponse, Error> {
        Ok(self.policies.list_runs(req).await?.into_inner())
    }

    pub async fn data_source_create(&mut self, definition_json: &str) -> Result<String, Error> {
        let r = pb::PolicyDataSource {
            json: definition_json.into(),
        };
        Ok(self.policies.create_data_source(r).await?.into_inner().json)
    }

    pub async fn data_sources(&mut self) -> Result<Vec<String>, Error> {
        Ok(self
            .policies
            .list_data_sources(pb::ListPolicyDataSourcesRequest {})
            .await?
            .into_inner()
            .data_sources
            .into_iter()
            .map(|d| d.json)
            .collect())
    }

    pub async fn data_source_delete(&mut self, name: &str) -> Result<(), Error> {
        self.policies
            .delete_data_source(pb::PolicyDataSourceRef { name: name.into() })
            .await?;
        Ok(())
    }
}
