import Foundation
import Hummingbird
import ProvisionControl
import ProvisionModel

/// The paths and methods the API serves, so that a request for a known path with another
/// method is answered 405 with `Allow`, not 404.
struct RouteTable: Sendable {
    private let routes: [(method: HTTPRequest.Method, segments: [Substring])]

    init(_ routes: [(HTTPRequest.Method, String)]) {
        self.routes = routes.map { ($0.0, $0.1.split(separator: "/")) }
    }

    /// The route that serves `path`, as registered (`/v1/products/:name`), if any.
    func template(of path: String) -> String? {
        let segments = path.split(separator: "/")
        return routes.first { route in
            route.segments.count == segments.count && zip(route.segments, segments).allSatisfy { $0.first == ":" || $0 == $1 }
        }.map { "/" + $0.segments.joined(separator: "/") }
    }

    /// The methods served at `path`, sorted; empty when no route has that path.
    func methods(at path: String) -> [String] {
        let segments = path.split(separator: "/")
        let found = routes.filter { route in
            route.segments.count == segments.count && zip(route.segments, segments).allSatisfy { $0.first == ":" || $0 == $1 }
        }
        return Set(found.map(\.method.rawValue)).sorted()
    }
}

/// Every error leaves the API as `{"error": {"code", "message"}}` with a stable code, the
/// router's own (unknown route, wrong method, body too large) included.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            if error.status == .notFound {
                let allowed = routes.methods(at: request.uri.path)
                if !allowed.isEmpty {
                    var response = APIRouter.error(.methodNotAllowed, code: .methodNotAllowed,
                                                   message: "\(request.method.rawValue) is not allowed on \(request.uri.path); allowed: \(allowed.joined(separator: ", "))")
                    response.headers[.allow] = allowed.joined(separator: ", ")
                    return response
                }
                return APIRouter.error(.notFound, code: .notFound, message: "no route for \(request.method.rawValue) \(request.uri.path)")
            }
            return APIRouter.error(error.status, code: Self.code(for: error.status), message: error.body ?? error.status.reasonPhrase)
        } catch let error as ControlStateNotSaved {
            return APIRouter.error(.serviceUnavailable, code: .stateNotSaved, message: error.description)
        } catch let denied as AccessDenied {
            return APIRouter.error(.forbidden, code: .forbidden, message: denied.message)
        } catch let conflict as StoreConflict {
            // Another server changed the object first: read it again and retry.
            return APIRouter.error(.conflict, code: .conflict, message: "\(conflict); nothing was changed")
        } catch {
            context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return APIRouter.error(.internalServerError, code: .internal, message: "the request failed: \(error)")
        }
    }

    static func code(for status: HTTPResponse.Status) -> APIErrorCode {
        switch status {
        case .contentTooLarge: return .payloadTooLarge
        case .requestTimeout: return .requestTimeout
        case .unsupportedMediaType: return .unsupportedMediaType
        case .notFound: return .notFound
        default: return status.code < 500 ? .invalidRequest : .internal
        }
    }
}
