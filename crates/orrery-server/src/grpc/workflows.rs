//! orrery.v1.Jobs's workflow methods (StartWorkflow, GetWorkflow,
//! CancelWorkflow) over the jobs service, with the same checks and
//! permissions as REST `/v1/workflows`; `Workflow.json` is the REST view.

use super::jobs_convert::{json_text, parse_json};
use crate::api::workflow_view::WorkflowView;
use crate::service::jobs::{StepArgs, WorkflowArgs};
use crate::service::Services;
use orrery_proto::v1 as pb;
use orrery_queue::{Resources, WorkflowRead};
use serde_json::Value;
use tonic::{Request, Response, Status};

fn workflow(r: &WorkflowRead) -> pb::Workflow {
    let w = &r.workflow;
    pb::Workflow {
        id: w.id.to_string(),
        queue: w.spec.queue.clone(),
        state: w.state.as_str().into(),
        json: json_text(&WorkflowView::new(r)),
    }
}

fn step(i: usize, s: pb::WorkflowStep) -> Result<StepArgs, Status> {
    let params = parse_json(&format!("steps[{i}].params_json"), &s.params_json, empty())?;
    Ok(StepArgs {
        name: s.name,
        kind: s.kind,
        params,
        depends_on: s.depends_on,
        for_each: s.for_each,
        on_failure: s.on_failure,
        priority: s.priority,
        resources: Resources {
            gpus: s.gpus,
            gpu_memory_mb: s.gpu_memory_mb,
            cpus: s.cpus,
            shared_gpu: s.shared_gpu,
        },
    })
}

fn empty() -> Value {
    Value::Object(Default::default())
}

pub async fn start(
    s: &Services,
    req: Request<pb::StartWorkflowRequest>,
) -> Result<Response<pb::Workflow>, Status> {
    let caller = super::caller(&req);
    let r = req.into_inner();
    let input = parse_json("input_json", &r.input_json, Value::Null)?;
    let steps = r
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, st)| step(i, st))
        .collect::<Result<Vec<_>, _>>()?;
    let w = s
        .jobs
        .start_workflow(WorkflowArgs {
            queue: r.queue,
            steps,
            input,
            caller: Some(caller),
        })
        .await?;
    Ok(Response::new(workflow(&w)))
}

pub async fn get(
    s: &Services,
    req: Request<pb::GetWorkflowRequest>,
) -> Result<Response<pb::Workflow>, Status> {
    let caller = super::caller(&req);
    let w = s.jobs.get_workflow(&req.into_inner().id).await?;
    caller.check_queue(&w.workflow.spec.queue)?;
    Ok(Response::new(workflow(&w)))
}

pub async fn cancel(
    s: &Services,
    req: Request<pb::CancelWorkflowRequest>,
) -> Result<Response<pb::Workflow>, Status> {
    let caller = super::caller(&req);
    let id = req.into_inner().id;
    s.jobs.authorize_workflow(&caller, &id, true).await?;
    let w = s.jobs.cancel_workflow(&id).await?;
    Ok(Response::new(workflow(&w)))
}
