//! Errors as the API answers them: a status and a JSON body `{"error":{"code","message"}}` whose
//! code is stable (clients branch on it) and whose message is for people.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A well-formed request the backend refused (validation of business rules).
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Csrf(String),
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Csrf(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Locked(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Csrf(_) => "csrf_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Rejected(_) => "rejected",
            ApiError::Conflict(_) => "conflict",
            ApiError::Locked(_) => "locked_out",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!("api internal error: {self}");
        }
        (self.status(), axum::Json(self.body())).into_response()
    }
}

impl From<crate::model::BackendError> for ApiError {
    fn from(e: crate::model::BackendError) -> ApiError {
        use crate::model::BackendError;
        match e {
            BackendError::Rejected(m) => ApiError::Rejected(m),
            BackendError::Invalid(m) => ApiError::BadRequest(m),
            BackendError::Overloaded => ApiError::Overloaded("overloaded; retry later".into()),
            BackendError::Unavailable(m) => ApiError::Unavailable(m),
            BackendError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::model::StoreError> for ApiError {
    fn from(e: crate::model::StoreError) -> ApiError {
        use crate::model::StoreError;
        match e {
            StoreError::Changed(m) => ApiError::Conflict(format!("changed meanwhile, try again: {m}")),
            StoreError::AuditHeadMoved => ApiError::Unavailable(e.to_string()),
            StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            StoreError::Failed(_) => ApiError::Internal(e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
