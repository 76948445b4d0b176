import AsyncHTTPClient
import NIOHTTPCompression

/// The HTTP client every sink shares: one connection pool for the process, kept for its
/// lifetime. Unlike `HTTPClient.shared` it follows no redirects (a sink talks to the server
/// its spec names, and credentials must not travel elsewhere) and accepts compressed answers
/// up to a size rather than a ratio: a bulk response of thousands of identical
/// `{"status":201}` items compresses far beyond the browser-like ratio limit.
public enum SinkHTTPClient {
    public static let shared: HTTPClient = {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow,
                                                     decompression: .enabled(limit: .size(256 * 1024 * 1024)))
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()
}
