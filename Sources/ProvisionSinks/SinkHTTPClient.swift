import AsyncHTTPClient
import NIOHTTPCompression
import ProvisionModel

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

/// What of an answer a sink puts in an error (and so in status, seen by the product's team):
/// an Elasticsearch-style `error.type: error.reason`, or the first 120 printable characters
/// of the body. Never headers, and never much of a body: a sink pointed at an internal
/// server must not make status a window onto it.
public enum ResponseExcerpt {
    public static let charactersMax = 120

    public static func of(_ body: [UInt8]) -> String {
        if let parsed = try? JSONParser.parse(Array(body.prefix(64 * 1024))), case .object(let object) = parsed,
            case .object(let error)? = object["error"], case .string(let type)? = error["type"]
        {
            var text = type
            if case .string(let reason)? = error["reason"] { text += ": " + reason }
            return clip(text)
        }
        return clip(String(decoding: body.prefix(charactersMax * 4), as: UTF8.self))
    }

    private static func clip(_ text: String) -> String {
        let printable = String(text.map { $0.isNewline || ($0.asciiValue.map { $0 < 0x20 || $0 == 0x7f } ?? false) ? " " : $0 })
        return printable.count > charactersMax ? printable.prefix(charactersMax) + "…" : printable
    }
}
