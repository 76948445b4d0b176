import Foundation
import Hummingbird
import Metrics

/// Counts every request and times it, by route template (never the raw path, whose values
/// grow without bound), method and status.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let route = routes.template(of: request.uri.path) ?? "unmatched"
        let response = try await next(request, context)
        let dimensions = [("route", route), ("method", request.method.rawValue), ("status", String(response.status.code))]
        Counter(label: "provision_http_requests_total", dimensions: dimensions).increment()
        Metrics.Timer(label: "provision_http_request_duration_seconds", dimensions: [("route", route), ("method", request.method.rawValue)],
                      preferredDisplayUnit: .seconds)
            .record(duration: ContinuousClock.now - started)
        return response
    }
}
