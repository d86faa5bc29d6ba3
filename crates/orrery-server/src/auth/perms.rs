//! Every endpoint's permission, in one table per front. The auth
//! middleware refuses a request whose endpoint is missing here (fail
//! closed), and the tests below read the routers' sources and the proto
//! files, so an endpoint added without a permission fails the build's tests.

use super::Role;
use axum::http::Method;

/// What an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Anyone, no credentials (health and readiness probes).
    Open,
    /// `cluster init`: anyone while the node is not part of a cluster (the
    /// caller receives the root token), an admin afterwards.
    Init,
    /// `/metrics`: any role, or anyone with `--metrics-public`.
    Metrics,
    /// Any authenticated caller, whatever its role (`whoami`).
    Authenticated,
    /// Reads of data and cluster state (not tokens).
    Read,
    /// Writes of KV, queues, vectors, policies, sources; policy runs.
    Write,
    /// Membership, tokens, cluster settings.
    Admin,
    /// Reading jobs: also workers (of their queues).
    JobsRead,
    /// Submitting and cancelling jobs (command jobs: admins only).
    JobsSubmit,
    /// Claiming, heartbeating, completing and failing jobs.
    JobsWork,
}

impl Perm {
    pub fn name(self) -> &'static str {
        match self {
            Perm::Open => "open",
            Perm::Init => "cluster.init",
            Perm::Metrics => "metrics",
            Perm::Authenticated => "authenticated",
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::Admin => "admin",
            Perm::JobsRead => "jobs.read",
            Perm::JobsSubmit => "jobs.submit",
            Perm::JobsWork => "jobs.work",
        }
    }

    /// Whether `role` holds this permission (Open, Init and Metrics are
    /// decided before roles; an admin holds them all).
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Perm::Open | Perm::Metrics | Perm::Authenticated => true,
            Perm::Init | Perm::Admin => role == Admin,
            Perm::Read => matches!(role, Admin | Writer | Reader),
            Perm::Write | Perm::JobsSubmit => matches!(role, Admin | Writer),
            Perm::JobsRead => matches!(role, Admin | Writer | Reader | Worker),
            Perm::JobsWork => matches!(role, Admin | Worker),
        }
    }
}

use Perm::*;

/// REST: (method, route as axum matches it, permission).
pub const REST: &[(&str, &str, Perm)] = &[
    ("GET", "/healthz", Open),
    ("GET", "/readyz", Open),
    ("GET", "/metrics", Metrics),
    // The OpenAPI document: the API's shape, no data.
    ("GET", "/v1/openapi.json", Open),
    // The web console's static files (http/ui.rs): public, like a login
    // page; every piece of data they show comes from the API with the
    // user's token. Not API routes, so not in the OpenAPI document.
    ("GET", "/ui", Open),
    ("GET", "/ui/", Open),
    ("GET", "/ui/{*file}", Open),
    ("GET", "/v1/cluster", Read),
    ("GET", "/v1/cluster/version", Read),
    ("POST", "/v1/cluster/version", Admin),
    ("GET", "/v1/cluster/status", Read),
    ("POST", "/v1/cluster/members", Admin),
    ("DELETE", "/v1/cluster/members/{id}", Admin),
    ("POST", "/v1/cluster/members/{id}/promote", Admin),
    // As gRPC GetRebalance / SetRebalance.
    ("GET", "/v1/cluster/rebalance", Read),
    ("PUT", "/v1/cluster/rebalance", Admin),
    ("GET", "/v1/auth/whoami", Authenticated),
    // A backup holds every token record and all data: admins only.
    ("POST", "/v1/backup", Admin),
    ("GET", "/v1/auth/tokens", Admin),
    ("POST", "/v1/auth/tokens", Admin),
    ("DELETE", "/v1/auth/tokens/{id}", Admin),
    ("GET", "/v1/kv", Read),
    ("DELETE", "/v1/kv", Write),
    ("GET", "/v1/kv/{*key}", Read),
    ("PUT", "/v1/kv/{*key}", Write),
    ("POST", "/v1/kv/{*key}", Write),
    ("DELETE", "/v1/kv/{*key}", Write),
    ("GET", "/v1/queues", JobsRead),
    ("POST", "/v1/queues", Write),
    ("GET", "/v1/queues/{q}", JobsRead),
    ("DELETE", "/v1/queues/{q}", Write),
    ("POST", "/v1/queues/{q}/claim", JobsWork),
    ("GET", "/v1/gpus", Read),
    ("GET", "/v1/jobs", JobsRead),
    ("POST", "/v1/jobs", JobsSubmit),
    ("POST", "/v1/jobs/batch", JobsSubmit),
    ("POST", "/v1/jobs/complete", JobsWork),
    ("GET", "/v1/jobs/{id}", JobsRead),
    ("POST", "/v1/jobs/{id}/cancel", JobsSubmit),
    ("GET", "/v1/jobs/{id}/runs", JobsRead),
    ("GET", "/v1/jobs/{id}/logs", JobsRead),
    ("POST", "/v1/jobs/{id}/heartbeat", JobsWork),
    ("POST", "/v1/jobs/{id}/complete", JobsWork),
    ("POST", "/v1/jobs/{id}/fail", JobsWork),
    // Workflows: as the jobs they are made of.
    ("POST", "/v1/workflows", JobsSubmit),
    ("GET", "/v1/workflows/{id}", JobsRead),
    ("POST", "/v1/workflows/{id}/cancel", JobsSubmit),
    // Datasets: their scans are jobs in the dataset's queue.
    ("POST", "/v1/datasets", Write),
    ("GET", "/v1/datasets", Read),
    ("GET", "/v1/datasets/{name}", Read),
    ("DELETE", "/v1/datasets/{name}", Write),
    ("GET", "/v1/datasets/{name}/items", Read),
    ("PATCH", "/v1/datasets/{name}/items", Write),
    ("POST", "/v1/datasets/{name}/scan", Write),
    ("POST", "/v1/datasets/{name}/search", Read),
    ("POST", "/v1/datasets/{name}/pipeline", Write),
    ("GET", "/v1/events", Read),
    ("GET", "/v1/events/stream", Read),
    ("GET", "/v1/policies", Read),
    ("POST", "/v1/policies", Write),
    ("GET", "/v1/policies/{id}", Read),
    ("PATCH", "/v1/policies/{id}", Write),
    ("DELETE", "/v1/policies/{id}", Write),
    ("GET", "/v1/policies/{id}/versions", Read),
    ("POST", "/v1/policies/{id}/versions", Write),
    ("GET", "/v1/policies/{id}/versions/{v}", Read),
    ("POST", "/v1/policies/{id}/versions/{v}/archive", Write),
    ("POST", "/v1/policies/{id}/runs", Write),
    ("POST", "/v1/policies/{id}/runs/batch", Write),
    ("GET", "/v1/policies/{id}/shadow", Read),
    ("GET", "/v1/runs", Read),
    ("GET", "/v1/runs/{id}", Read),
    ("GET", "/v1/data-sources", Read),
    ("POST", "/v1/data-sources", Write),
    ("DELETE", "/v1/data-sources/{name}", Write),
    ("GET", "/v1/collections", Read),
    ("POST", "/v1/collections", Write),
    ("GET", "/v1/collections/{c}", Read),
    ("DELETE", "/v1/collections/{c}", Write),
    ("PUT", "/v1/collections/{c}/points", Write),
    ("POST", "/v1/collections/{c}/points/delete", Write),
    ("GET", "/v1/collections/{c}/points/{id}", Read),
    // Searches are reads that carry their query in a body.
    ("POST", "/v1/collections/{c}/search", Read),
    ("POST", "/v1/collections/{c}/search/batch", Read),
];

/// REST endpoints whose body is not JSON (a raw KV value).
pub const RAW_BODY: &[(&str, &str)] = &[("PUT", "/v1/kv/{*key}")];

/// gRPC: (full method path, permission).
pub const GRPC: &[(&str, Perm)] = &[
    ("/orrery.v1.Cluster/Init", Init),
    ("/orrery.v1.Cluster/AddMember", Admin),
    ("/orrery.v1.Cluster/RemoveMember", Admin),
    ("/orrery.v1.Cluster/PromoteMember", Admin),
    ("/orrery.v1.Cluster/ListMembers", Read),
    ("/orrery.v1.Cluster/ListShards", Read),
    ("/orrery.v1.Cluster/Status", Read),
    ("/orrery.v1.Cluster/GetVersion", Read),
    ("/orrery.v1.Cluster/SetVersion", Admin),
    ("/orrery.v1.Cluster/GetRebalance", Read),
    ("/orrery.v1.Cluster/SetRebalance", Admin),
    ("/orrery.v1.Cluster/CreateBackup", Admin),
    ("/orrery.v1.Auth/CreateToken", Admin),
    ("/orrery.v1.Auth/ListTokens", Admin),
    ("/orrery.v1.Auth/RevokeToken", Admin),
    ("/orrery.v1.Kv/Put", Write),
    ("/orrery.v1.Kv/Get", Read),
    ("/orrery.v1.Kv/Delete", Write),
    ("/orrery.v1.Kv/Cas", Write),
    ("/orrery.v1.Kv/List", Read),
    ("/orrery.v1.Kv/DeletePrefix", Write),
    ("/orrery.v1.Jobs/CreateQueue", Write),
    ("/orrery.v1.Jobs/ListQueues", JobsRead),
    ("/orrery.v1.Jobs/GetQueue", JobsRead),
    ("/orrery.v1.Jobs/DeleteQueue", Write),
    ("/orrery.v1.Jobs/Submit", JobsSubmit),
    ("/orrery.v1.Jobs/GetJob", JobsRead),
    ("/orrery.v1.Jobs/ListJobs", JobsRead),
    ("/orrery.v1.Jobs/Cancel", JobsSubmit),
    ("/orrery.v1.Jobs/Runs", JobsRead),
    ("/orrery.v1.Jobs/Logs", JobsRead),
    ("/orrery.v1.Jobs/Claim", JobsWork),
    ("/orrery.v1.Jobs/Heartbeat", JobsWork),
    ("/orrery.v1.Jobs/Complete", JobsWork),
    ("/orrery.v1.Jobs/Fail", JobsWork),
    ("/orrery.v1.Jobs/Events", Read),
    ("/orrery.v1.Jobs/Gpus", Read),
    ("/orrery.v1.Jobs/SubmitBatch", JobsSubmit),
    ("/orrery.v1.Jobs/CompleteBatch", JobsWork),
    ("/orrery.v1.Jobs/StartWorkflow", JobsSubmit),
    ("/orrery.v1.Jobs/GetWorkflow", JobsRead),
    ("/orrery.v1.Jobs/CancelWorkflow", JobsSubmit),
    ("/orrery.v1.Vectors/CreateCollection", Write),
    ("/orrery.v1.Vectors/ListCollections", Read),
    ("/orrery.v1.Vectors/GetCollection", Read),
    ("/orrery.v1.Vectors/DropCollection", Write),
    ("/orrery.v1.Vectors/UpsertPoints", Write),
    ("/orrery.v1.Vectors/GetPoint", Read),
    ("/orrery.v1.Vectors/DeletePoints", Write),
    ("/orrery.v1.Vectors/Search", Read),
    ("/orrery.v1.Vectors/SearchBatch", Read),
    ("/orrery.v1.Policies/CreatePolicy", Write),
    ("/orrery.v1.Policies/ListPolicies", Read),
    ("/orrery.v1.Policies/GetPolicy", Read),
    ("/orrery.v1.Policies/UpdatePolicy", Write),
    ("/orrery.v1.Policies/DeletePolicy", Write),
    ("/orrery.v1.Policies/CreateVersion", Write),
    ("/orrery.v1.Policies/ListVersions", Read),
    ("/orrery.v1.Policies/GetVersion", Read),
    ("/orrery.v1.Policies/ArchiveVersion", Write),
    ("/orrery.v1.Policies/Run", Write),
    ("/orrery.v1.Policies/RunBatch", Write),
    ("/orrery.v1.Policies/GetRun", Read),
    ("/orrery.v1.Policies/ListRuns", Read),
    ("/orrery.v1.Policies/CreateDataSource", Write),
    ("/orrery.v1.Policies/ListDataSources", Read),
    ("/orrery.v1.Policies/DeleteDataSource", Write),
    ("/orrery.v1.Policies/SetPolicySettings", Write),
    ("/orrery.v1.Policies/CompareShadow", Read),
];

/// Routes that serve the web console's files rather than the API: they
/// are left out of the OpenAPI document on purpose (http/openapi.rs's
/// parity test skips exactly these).
pub fn is_console_route(route: &str) -> bool {
    route == "/ui" || route.starts_with("/ui/")
}

pub fn rest(method: &Method, route: &str) -> Option<Perm> {
    REST.iter()
        .find(|(m, r, _)| *r == route && method.as_str() == *m)
        .map(|(_, _, p)| *p)
}

pub fn raw_body(method: &Method, route: &str) -> bool {
    RAW_BODY
        .iter()
        .any(|(m, r)| *r == route && method.as_str() == *m)
}

pub fn grpc(path: &str) -> Option<Perm> {
    GRPC.iter().find(|(p, _)| *p == path).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// (method, path) of every `.route(...)` in the REST front's sources.
    fn routes_in_sources() -> BTreeSet<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut out = BTreeSet::new();
        for e in std::fs::read_dir(&dir).expect("src/http") {
            let path = e.expect("entry").path();
            let s = std::fs::read_to_string(&path).expect("source");
            let mut rest = s.as_str();
            while let Some(i) = rest.find(".route(") {
                let body = &rest[i + 7..];
                // The call's arguments end at the parenthesis that closes it.
                let mut depth = 1;
                let end = body
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map(|(j, _)| j)
                    .expect("closing parenthesis");
                let args = &body[..end];
                let q1 = args.find('"').expect("route path");
                let q2 = q1 + 1 + args[q1 + 1..].find('"').expect("route path end");
                let route = &args[q1 + 1..q2];
                for m in ["get", "post", "put", "delete", "patch"] {
                    let tail = &args[q2..];
                    let called = tail.match_indices(&format!("{m}(")).any(|(k, _)| {
                        k == 0
                            || !tail.as_bytes()[k - 1].is_ascii_alphanumeric()
                                && tail.as_bytes()[k - 1] != b'_'
                    });
                    if called {
                        out.insert((m.to_uppercase(), route.to_string()));
                    }
                }
                rest = &body[end..];
            }
        }
        out
    }

    #[test]
    fn every_rest_route_has_a_permission_and_every_permission_a_route() {
        let found = routes_in_sources();
        assert!(
            found.len() > 40,
            "the source scan found too little: {found:?}"
        );
        let table: BTreeSet<(String, String)> = REST
            .iter()
            .map(|(m, r, _)| (m.to_string(), r.to_string()))
            .collect();
        let missing: Vec<_> = found.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "routes without a permission in auth/perms.rs: {missing:?}"
        );
        let stale: Vec<_> = table.difference(&found).collect();
        assert!(
            stale.is_empty(),
            "permissions for routes that do not exist: {stale:?}"
        );
    }

    #[test]
    fn every_grpc_method_has_a_permission() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/orrery/v1");
        let mut found = BTreeSet::new();
        for e in std::fs::read_dir(&root).expect("proto dir") {
            let s = std::fs::read_to_string(e.expect("entry").path()).expect("proto");
            let mut service = String::new();
            for line in s.lines().map(str::trim) {
                if let Some(r) = line.strip_prefix("service ") {
                    service = r.trim_end_matches('{').trim().to_string();
                } else if let Some(r) = line.strip_prefix("rpc ") {
                    let name = r.split('(').next().unwrap_or("").trim();
                    found.insert(format!("/orrery.v1.{service}/{name}"));
                }
            }
        }
        let table: BTreeSet<String> = GRPC.iter().map(|(p, _)| p.to_string()).collect();
        assert!(found.len() > 50, "{found:?}");
        let missing: Vec<_> = found.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "gRPC methods without a permission: {missing:?}"
        );
        let stale: Vec<_> = table.difference(&found).collect();
        assert!(
            stale.is_empty(),
            "permissions for gRPC methods that do not exist: {stale:?}"
        );
    }

    #[test]
    fn roles_hold_what_docs_security_md_says() {
        use Role::*;
        // Admin: everything.
        for p in [
            Read,
            Write,
            Perm::Admin,
            JobsRead,
            JobsSubmit,
            JobsWork,
            Init,
        ] {
            assert!(p.allows(Role::Admin), "{p:?}");
        }
        assert!(Read.allows(Reader) && !Write.allows(Reader) && !JobsWork.allows(Reader));
        assert!(Write.allows(Writer) && JobsSubmit.allows(Writer) && !Perm::Admin.allows(Writer));
        assert!(!JobsWork.allows(Writer));
        assert!(JobsWork.allows(Worker) && JobsRead.allows(Worker));
        for r in [Role::Admin, Writer, Reader, Worker] {
            assert!(Authenticated.allows(r), "{r:?}");
        }
        assert!(!Read.allows(Worker) && !Write.allows(Worker) && !JobsSubmit.allows(Worker));
    }
}
