import Hummingbird
import HummingbirdAuth
import ProvisionControl
import ProvisionModel

/// Who sends the request being answered; nil outside one.
enum RequestCaller {
    @TaskLocal static var current: Caller?
}

/// Every request but health and probes carries `Authorization: Bearer <token>`; no token, or one
/// that is unknown, expired or revoked, is `401 Unauthorized` before any handler runs. Off
/// (`--dev`), every request acts as an admin.
struct AuthenticationMiddleware<Context: RequestContext>: RouterMiddleware {
    let reconciler: Reconciler
    let authenticating: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard authenticating else {
            return try await RequestCaller.$current.withValue(.development) { try await next(request, context) }
        }
        if Self.openPaths.contains(request.uri.path) { return try await next(request, context) }
        guard let bearer = request.headers.bearer else {
            return Self.unauthorized("no token: send Authorization: Bearer <token>")
        }
        // Looked up on every request, so a revocation takes effect on the next one.
        guard let caller = reconciler.authenticate(bearer.token) else {
            return Self.unauthorized("the token is unknown, expired or revoked")
        }
        return try await RequestCaller.$current.withValue(caller) { try await next(request, context) }
    }

    /// Health and probes (load balancers and orchestrators call them without a token), the
    /// contract, and the portal's files (the page asks for a token before it calls the API).
    static var openPaths: Set<String> { ["/healthz", "/livez", "/readyz", "/openapi.json", "/", "/portal/portal.js", "/portal/portal.css"] }

    private static func unauthorized(_ message: String) -> Response {
        var response = APIRouter.error(.unauthorized, code: .unauthorized, message: message)
        response.headers[.wwwAuthenticate] = "Bearer"
        return response
    }
}
