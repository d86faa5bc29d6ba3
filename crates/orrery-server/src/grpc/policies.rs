//! The orrery.v1.Policies gRPC service: the same operations as the REST
//! routes, through the same [`PoliciesService`].

use super::policies_shadow as shadow;
use crate::api::ApiError;
use crate::service::policies::{
    parse_source, source_json, PoliciesService, RunRequest, DEFAULT_RUN_LIST,
};
use crate::service::Services;
use orrery_policy::store::{DataSource, Policy, Run, RunFilter, RunStatus, Version};
use orrery_policy::store_ext::{PolicySettings, RunExt, RunFilterExt};
use orrery_policy::termination::Termination;
use orrery_proto::v1 as pb;
use orrery_proto::v1::policies_server::Policies;
use serde_json::Value;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct PoliciesApi(pub Arc<Services>);

impl PoliciesApi {
    fn svc(&self) -> &Arc<PoliciesService> {
        &self.0.policies
    }
}

fn json_arg(what: &str, s: &str) -> Result<Value, ApiError> {
    serde_json::from_str(s).map_err(|e| ApiError::bad("invalid_json", format!("{what}: {e}")))
}

fn policy((p, st): (Policy, PolicySettings)) -> pb::Policy {
    pb::Policy {
        shadow_version: st.shadow_version,
        run_retention_ms: st.run_retention_ms,
        id: p.id,
        name: p.name,
        description: p.description,
        created: p.created_ms,
        updated: p.updated_ms,
        allocation: p
            .allocation
            .into_iter()
            .map(|(version, weight)| pb::PolicyWeight { version, weight })
            .collect(),
        latest_version: p.latest_version,
    }
}

fn version(v: Version) -> pb::PolicyVersion {
    pb::PolicyVersion {
        policy_id: v.policy_id,
        version: v.version,
        graph_json: v.graph,
        created_by: v.created_by,
        created: v.created_ms,
        archived: v.archived,
    }
}

fn run(r: Run, ext: RunExt) -> pb::PolicyRun {
    pb::PolicyRun {
        shadow: ext.shadow.map(shadow::shadow_pb),
        termination: ext.termination.map(shadow::termination_pb),
        id: r.id,
        policy_id: r.policy_id,
        version: r.version,
        status: r.status.as_str().into(),
        run_key: r.run_key,
        input_json: r.input,
        output_json: r.output,
        trace_json: r.trace,
        error: r.error,
        created: r.created_ms,
        finished: r.finished_ms,
    }
}

fn termination(t: Termination) -> pb::PolicyTermination {
    pb::PolicyTermination {
        status: t.status,
        reason: t.reason,
    }
}

fn source(s: &DataSource) -> pb::PolicyDataSource {
    pb::PolicyDataSource {
        json: source_json(s).to_string(),
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Policies for PoliciesApi {
    async fn create_policy(&self, req: Request<pb::CreatePolicyRequest>) -> R<pb::Policy> {
        let r = req.into_inner();
        let p = self.svc().create(r.name, r.description).await?;
        Ok(Response::new(policy((p, PolicySettings::default()))))
    }

    async fn list_policies(
        &self,
        _req: Request<pb::ListPoliciesRequest>,
    ) -> R<pb::ListPoliciesResponse> {
        let ps = self.svc().list_full().await?;
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: ps.into_iter().map(policy).collect(),
        }))
    }

    async fn get_policy(&self, req: Request<pb::PolicyRef>) -> R<pb::Policy> {
        Ok(Response::new(policy(
            self.svc().get_full(&req.into_inner().id).await?,
        )))
    }

    async fn update_policy(&self, req: Request<pb::UpdatePolicyRequest>) -> R<pb::Policy> {
        let r = req.into_inner();
        let alloc = r
            .set_allocation
            .then(|| r.allocation.iter().map(|w| (w.version, w.weight)).collect());
        self.svc().update(&r.id, r.description, alloc).await?;
        Ok(Response::new(policy(self.svc().get_full(&r.id).await?)))
    }

    async fn delete_policy(&self, req: Request<pb::PolicyRef>) -> R<pb::PolicyDeleteResponse> {
        self.svc().delete(&req.into_inner().id).await?;
        Ok(Response::new(pb::PolicyDeleteResponse { deleted: true }))
    }

    async fn create_version(
        &self,
        req: Request<pb::CreatePolicyVersionRequest>,
    ) -> R<pb::PolicyVersion> {
        let r = req.into_inner();
        let graph = json_arg("graph_json", &r.graph_json)?;
        let who = if r.created_by.is_empty() {
            "anonymous".to_string()
        } else {
            r.created_by
        };
        let v = self
            .svc()
            .version_create(&r.policy_id, &graph, !r.inactive, who)
            .await?;
        Ok(Response::new(version(v)))
    }

    async fn list_versions(
        &self,
        req: Request<pb::PolicyRef>,
    ) -> R<pb::ListPolicyVersionsResponse> {
        let vs = self.svc().versions(&req.into_inner().id).await?;
        Ok(Response::new(pb::ListPolicyVersionsResponse {
            versions: vs.into_iter().map(version).collect(),
        }))
    }

    async fn get_version(&self, req: Request<pb::PolicyVersionRef>) -> R<pb::PolicyVersion> {
        let r = req.into_inner();
        let p = self.svc().get(&r.policy_id).await?;
        Ok(Response::new(version(
            self.svc().version_get(&p.id, r.version).await?,
        )))
    }

    async fn archive_version(&self, req: Request<pb::PolicyVersionRef>) -> R<pb::PolicyVersion> {
        let r = req.into_inner();
        Ok(Response::new(version(
            self.svc().version_archive(&r.policy_id, r.version).await?,
        )))
    }

    async fn run(&self, req: Request<pb::RunPolicyRequest>) -> R<pb::PolicyRun> {
        let r = req.into_inner();
        let input = json_arg("input_json", &r.input_json)?;
        let req = RunRequest {
            input,
            version: r.version,
            run_key: r.run_key,
        };
        let out = match r.mode.as_deref() {
            None | Some("sync") => self.svc().run(&r.policy_id, req).await?,
            Some("async") => (
                self.svc().run_async(&r.policy_id, req).await?,
                RunExt::default(),
            ),
            Some(other) => {
                return Err(ApiError::bad(
                    "invalid_mode",
                    format!("mode must be \"sync\" or \"async\", got {other:?}"),
                )
                .into())
            }
        };
        Ok(Response::new(run(out.0, out.1)))
    }

    async fn run_batch(
        &self,
        req: Request<pb::PolicyRunBatchRequest>,
    ) -> R<pb::PolicyRunBatchResponse> {
        let r = req.into_inner();
        let inputs = r
            .inputs_json
            .iter()
            .enumerate()
            .map(|(i, s)| json_arg(&format!("inputs_json[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let (version, outcomes) = self.svc().batch(&r.policy_id, inputs, r.version).await?;
        Ok(Response::new(pb::PolicyRunBatchResponse {
            version,
            results: outcomes
                .into_iter()
                .map(|o| pb::PolicyBatchResult {
                    status: if o.succeeded() { "succeeded" } else { "failed" }.into(),
                    output_json: o.output.map(|v| v.to_string()),
                    error: o.error,
                    termination: o.termination.map(termination),
                })
                .collect(),
        }))
    }

    async fn get_run(&self, req: Request<pb::PolicyRunRef>) -> R<pb::PolicyRun> {
        let r = self.svc().run_get_full(&req.into_inner().id).await?;
        Ok(Response::new(run(r.run, r.ext)))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListPolicyRunsRequest>,
    ) -> R<pb::ListPolicyRunsResponse> {
        let r = req.into_inner();
        let status = match r.status.as_deref() {
            None | Some("") => None,
            Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
                ApiError::bad(
                    "invalid_status",
                    format!("status must be running, succeeded or failed, got {s:?}"),
                )
            })?),
        };
        let f = RunFilterExt {
            base: RunFilter {
                policy_id: r.policy.filter(|p| !p.is_empty()),
                version: r.version,
                status,
                before: r.cursor.filter(|c| !c.is_empty()),
                limit: if r.limit == 0 {
                    DEFAULT_RUN_LIST
                } else {
                    r.limit as usize
                },
            },
            since_ms: r.since,
            until_ms: r.until,
            outcome: r.outcome.filter(|o| !o.is_empty()),
            shadowed: false,
        };
        let (runs, next) = self.svc().runs_list_full(f).await?;
        Ok(Response::new(pb::ListPolicyRunsResponse {
            runs: runs.into_iter().map(|r| run(r.run, r.ext)).collect(),
            next_cursor: next,
        }))
    }

    async fn create_data_source(
        &self,
        req: Request<pb::PolicyDataSource>,
    ) -> R<pb::PolicyDataSource> {
        let def = json_arg("json", &req.into_inner().json)?;
        let s = self.svc().data_source_create(parse_source(&def)?).await?;
        Ok(Response::new(source(&s)))
    }

    async fn list_data_sources(
        &self,
        _req: Request<pb::ListPolicyDataSourcesRequest>,
    ) -> R<pb::ListPolicyDataSourcesResponse> {
        let s = self.svc().data_sources().await?;
        Ok(Response::new(pb::ListPolicyDataSourcesResponse {
            data_sources: s.iter().map(source).collect(),
        }))
    }

    async fn delete_data_source(
        &self,
        req: Request<pb::PolicyDataSourceRef>,
    ) -> R<pb::PolicyDeleteResponse> {
        self.svc().data_source_delete(req.into_inner().name).await?;
        Ok(Response::new(pb::PolicyDeleteResponse { deleted: true }))
    }

    async fn set_policy_settings(
        &self,
        req: Request<pb::SetPolicySettingsRequest>,
    ) -> R<pb::Policy> {
        let r = req.into_inner();
        let shadow = r.set_shadow_version.then_some(r.shadow_version);
        let retention = r.set_run_retention.then_some(r.run_retention_ms);
        let p = self.svc().settings_set(&r.id, shadow, retention).await?;
        Ok(Response::new(policy(p)))
    }

    async fn compare_shadow(
        &self,
        req: Request<pb::CompareShadowRequest>,
    ) -> R<pb::ShadowComparison> {
        Ok(Response::new(
            shadow::compare(self.svc(), req.into_inner()).await?,
        ))
    }
}
