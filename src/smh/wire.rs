//! SMH wire types shared by the gateway and the emulator: the error shape,
//! token responses and the documented error codes (smh-api.md section 4).

use serde::{Deserialize, Serialize};

/// SMH's error body. SDKs read `code`, `message` and `requestId`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(
        rename = "requestId",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub request_id: String,
}

/// Answer of generate and renew: `{accessToken, expiresIn}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenResponse {
    #[serde(rename = "accessToken")]
    pub access_token: String,
    #[serde(rename = "expiresIn")]
    pub expires_in: u64,
}

/// Documented SMH error codes used by this crate.
pub mod code {
    pub const EMPTY_LIBRARY_ID_OR_SECRET: &str = "EmptyLibraryIdOrSecret";
    pub const EMPTY_LIBRARY_ID: &str = "EmptyLibraryId";
    pub const EMPTY_LIBRARY_SECRET: &str = "EmptyLibrarySecret";
    pub const WRONG_LIBRARY_ID_OR_SECRET: &str = "WrongLibraryIdOrSecret";
    pub const LIBRARY_NOT_FOUND: &str = "LibraryNotFound";
    pub const SPACE_NOT_FOUND: &str = "SpaceNotFound";
    pub const NOT_MULTI_SPACE_LIBRARY: &str = "NotMultiSpaceLibrary";
    pub const EMPTY_ACCESS_TOKEN: &str = "EmptyAccessToken";
    pub const INVALID_ACCESS_TOKEN: &str = "InvalidAccessToken";
    pub const ACCESS_TOKEN_NOT_MATCH_SPACE: &str = "AccessTokenNotMatchSpace";
    pub const NO_PERMISSION: &str = "NoPermission";
    pub const EMPTY_PATH: &str = "EmptyPath";
    pub const EMPTY_FILE_NAME: &str = "EmptyFileName";
    pub const DIRECTORY_NAME_LENGTH_EXCEED: &str = "DirectoryNameLengthExceed";
    pub const FILE_NAME_LENGTH_EXCEED: &str = "FileNameLengthExceed";
    pub const DIRECTORY_NOT_FOUND: &str = "DirectoryNotFound";
    pub const FILE_NOT_FOUND: &str = "FileNotFound";
    pub const CONFIRM_KEY_NOT_FOUND: &str = "ConfirmKeyNotFound";
    pub const UPLOAD_INCOMPLETE: &str = "UploadIncomplete";
    pub const UPLOAD_COMPLETE: &str = "UploadComplete";
    pub const SOURCE_DIRECTORY_NOT_FOUND: &str = "SourceDirectoryNotFound";
    pub const SOURCE_FILE_NOT_FOUND: &str = "SourceFileNotFound";
    pub const SAME_NAME_EXISTS: &str = "SameNameDirectoryOrFileExists";
    pub const BAD_CRC64: &str = "BadCrc64";
    pub const BAD_REQUEST: &str = "BadRequest";
    pub const PARAM_INVALID: &str = "ParamInvalid";
    pub const INVALID_CONFLICT_STRATEGY: &str = "InvalidConflictResolutionStrategy";
    pub const ROUTE_NOT_FOUND: &str = "RouteNotFound";
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    pub const MARKER_NOT_FOUND: &str = "MarkerNotFound";
    pub const REQUEST_ENTITY_TOO_LARGE: &str = "RequestEntityTooLarge";
    pub const URI_TOO_LONG: &str = "URITooLong";
    pub const RATE_LIMIT_EXCEEDED: &str = "RateLimitExceeded";
    pub const HEADER_FIELDS_TOO_LARGE: &str = "HeaderFieldsTooLarge";
    pub const INTERNAL_SERVER_ERROR: &str = "InternalServerError";
    pub const SERVER_OVERLOADED: &str = "ServerOverloaded";
    pub const REQUEST_TIMEOUT: &str = "RequestTimeout";

    // Codes SMH does not have, for what only the gateway can say. Named in
    // SMH's style so SDKs surface them like SMH's own.
    pub const MISSING_SESSION: &str = "MissingSession";
    pub const INVALID_SESSION: &str = "InvalidSession";
    pub const TOKEN_SERVICE_UNAVAILABLE: &str = "TokenServiceUnavailable";
    pub const SESSION_SERVICE_UNAVAILABLE: &str = "SessionServiceUnavailable";
    pub const TOKEN_MINT_FAILED: &str = "TokenMintFailed";
    pub const UPSTREAM_UNAVAILABLE: &str = "UpstreamUnavailable";
}
