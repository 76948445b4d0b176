import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import ProvisionModel

/// Talks to a Provision server's HTTP API.
struct APIClient {
    let baseURL: String
    /// Sent as `Authorization: Bearer …` when set.
    var token: String? = nil

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    struct Reply {
        var status: Int
        var body: Data
        /// A list's `Provision-Continue`: the token of its next page.
        var continueToken: String? = nil

        func decode<T: Decodable>(_ type: T.Type) throws -> T {
            try JSONDecoder().decode(type, from: body)
        }

        /// The API's error body as one readable message, spec errors one per line.
        var errorMessage: String {
            guard let error = try? JSONDecoder().decode(APIErrorBody.self, from: body) else {
                return "HTTP \(status): \(String(decoding: body.prefix(500), as: UTF8.self))"
            }
            var lines = ["error: \(error.error.message) [\(error.error.code)]"]
            for detail in error.error.details ?? [] { lines.append(detail.description) }
            return lines.joined(separator: "\n")
        }
    }

    /// The process's client. A refused connection fails at once: by default a pool retries
    /// connecting until the request's timeout, and a command pointed at a server that is not
    /// running sat for a minute and a half before saying so.
    private static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration.singletonConfiguration
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(10)
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    func send(_ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json",
              timeout: TimeAmount = .seconds(120)) async throws -> Reply
    {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await Self.http.execute(request, timeout: timeout)
        } catch {
            throw Failure(description: "cannot reach the Provision server at \(baseURL): \(error) (start one with 'provisionctl serve', or set --server / PROVISION_SERVER)")
        }
        let bytes = try await response.body.collect(upTo: 256 * 1024 * 1024)
        return Reply(status: Int(response.status.code), body: Data(buffer: bytes),
                     continueToken: response.headers.first(name: "Provision-Continue"))
    }

    /// Every item of a list, page after page.
    func listAll<Item: Decodable>(_ path: String, as type: Item.Type) async throws -> [Item] {
        var items: [Item] = []
        var token: String?
        repeat {
            let separator = path.contains("?") ? "&" : "?"
            let page = try await send(.GET, path + (token.map { "\(separator)continue=\($0.urlComponentEncoded)" } ?? ""))
            guard (200..<300).contains(page.status) else { throw Failure(description: page.errorMessage) }
            items += try page.decode([Item].self)
            token = page.continueToken
        } while token != nil
        return items
    }

    /// Sends and decodes a 2xx reply; anything else becomes a readable failure.
    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: Data? = nil, as type: T.Type,
                            contentType: String = "application/json") async throws -> T
    {
        let reply = try await send(method, path, body: body, contentType: contentType)
        guard (200..<300).contains(reply.status) else { throw Failure(description: reply.errorMessage) }
        return try reply.decode(type)
    }

    /// A page of a topic's records, read with Provision's own JSON so decimals keep their digits.
    func recordsPage(_ path: String) async throws -> RecordsPage {
        let reply = try await send(.GET, path)
        guard (200..<300).contains(reply.status) else { throw Failure(description: reply.errorMessage) }
        guard let json = try? JSONParser.parse([UInt8](reply.body)), let page = RecordsPage(json: json) else {
            throw Failure(description: "the server's answer is not a page of records")
        }
        return page
    }
}

extension String {
    /// Percent-encodes a path segment or query value.
    var urlComponentEncoded: String {
        addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? self
    }
}
