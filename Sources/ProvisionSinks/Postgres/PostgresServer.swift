import NIOSSL
import PostgresNIO
import ProvisionModel
import ProvisionPipeline

/// Where a PostgreSQL sink connects: the spec's URL with its reference resolved, and the
/// TLS that its `sslmode` asks for, with libpq's meanings.
struct PostgresServer {
    var parts: PostgresURL.Parts
    var configuration: PostgresConnection.Configuration

    var password: String? { parts.password }

    static func resolve(_ spec: PostgresSinkSpec, resolver: SinkResolver) throws -> PostgresServer {
        let url = try resolver.resolve(spec.url)
        guard let parts = PostgresURL.parse(url) else {
            throw SinkError(reason: "SinkUnavailable", message: "\(spec.redactedURL) is not a postgres:// URL")
        }
        let tls: PostgresConnection.Configuration.TLS
        do {
            tls = try Self.tls(parts.sslMode)
        } catch let error as SinkError {
            throw error
        } catch {
            throw SinkError(reason: "SinkUnavailable", message: "cannot set up TLS for \(spec.redactedURL): \(error)")
        }
        let configuration = PostgresConnection.Configuration(
            host: parts.host, port: parts.port, username: parts.user, password: parts.password, database: parts.database, tls: tls)
        return PostgresServer(parts: parts, configuration: configuration)
    }

    /// `disable` speaks plain text; `prefer` (the default) and `require` encrypt without
    /// checking the certificate (`prefer` falls back to plain text); `verify-ca` checks the
    /// chain against the system's roots; `verify-full` checks the host name as well.
    static func tls(_ mode: String?) throws -> PostgresConnection.Configuration.TLS {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch mode ?? "prefer" {
        case "disable":
            return .disable
        case "allow", "prefer":
            configuration.certificateVerification = .none
            return .prefer(try NIOSSLContext(configuration: configuration))
        case "require":
            configuration.certificateVerification = .none
            return .require(try NIOSSLContext(configuration: configuration))
        case "verify-ca":
            configuration.certificateVerification = .noHostnameVerification
            return .require(try NIOSSLContext(configuration: configuration))
        case "verify-full":
            configuration.certificateVerification = .fullVerification
            return .require(try NIOSSLContext(configuration: configuration))
        case let other:
            throw SinkError(reason: "SinkUnavailable",
                            message: "sslmode=\(other) is not one of disable, allow, prefer, require, verify-ca, verify-full")
        }
    }
}
