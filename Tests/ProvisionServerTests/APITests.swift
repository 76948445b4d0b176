import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
import ProvisionControl
import ProvisionLog
@testable import ProvisionModel
import ProvisionPipeline
@testable import ProvisionServer

private func makeRouter() async throws -> APIRouter {
    let directory = NSTemporaryDirectory() + "provision-api-\(UUID().uuidString)"
    let log = try EmbeddedEventLog(directory: directory + "/log")
    let reconciler = try await Reconciler(
        log: log, store: EmbeddedControlStore(directory: directory + "/control"),
        sinks: SinkFactory(fileRoot: directory + "/files", checkpoints: FileCheckpointStore(directory: directory + "/checkpoints")),
        logger: Logger(label: "test"))
    return APIRouter(reconciler: reconciler, authenticating: false)
}

/// The contract and the server agree both ways: every route the server registers is in the
/// OpenAPI document with the same method, and the document describes no route the server
/// lacks; every error code the document lists is the server's.
@Suite struct OpenAPIContractTests {
    @Test func theDocumentAndTheRoutesAgree() async throws {
        let document = try #require(try JSONSerialization.jsonObject(with: Data(PackageResources.openapi_json)) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        var documented: Set<String> = []
        for (path, operations) in paths {
            // `{name}` in the document is `:name` in the router.
            let routerPath = path.split(separator: "/").map { $0.hasPrefix("{") ? ":" + $0.dropFirst().dropLast() : $0 }.joined(separator: "/")
            for method in operations.keys { documented.insert("\(method.uppercased()) /\(routerPath)") }
        }
        let served = Set(try await makeRouter().registered.map { "\($0.method) \($0.path)" })
        #expect(served.subtracting(documented).isEmpty, "served but not documented: \(served.subtracting(documented).sorted())")
        #expect(documented.subtracting(served).isEmpty, "documented but not served: \(documented.subtracting(served).sorted())")
        let schemas = (document["components"] as? [String: Any])?["schemas"] as? [String: Any]
        let error = ((schemas?["Error"] as? [String: Any])?["properties"] as? [String: Any])?["error"] as? [String: Any]
        let codes = ((error?["properties"] as? [String: Any])?["code"] as? [String: Any])?["enum"] as? [String]
        #expect(codes == APIErrorCode.allCases.map(\.rawValue))
    }

    @Test func theServerServesItsContract() async throws {
        try await makeApplication().test(.router) { client in
            try await client.execute(uri: "/openapi.json", method: .get) { response in
                #expect(response.status == .ok)
                #expect(Array(buffer: response.body) == PackageResources.openapi_json)
            }
        }
    }
}

private func makeApplication() async throws -> some ApplicationProtocol {
    let directory = NSTemporaryDirectory() + "provision-api-\(UUID().uuidString)"
    let log = try EmbeddedEventLog(directory: directory + "/log")
    let reconciler = try await Reconciler(
        log: log, store: EmbeddedControlStore(directory: directory + "/control"),
        sinks: SinkFactory(fileRoot: directory + "/files", checkpoints: FileCheckpointStore(directory: directory + "/checkpoints")),
        logger: Logger(label: "test"))
    return Application(router: APIRouter(reconciler: reconciler, authenticating: false).build())
}

private func json(_ buffer: ByteBuffer) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(buffer: buffer)) as? [String: Any] ?? [:]
}

private func applyBody(_ content: String, dryRun: Bool = false) throws -> ByteBuffer {
    ByteBuffer(data: try JSONEncoder().encode(ApplyRequest(files: [SpecFile(name: "specs/eu.yaml", content: content)], dryRun: dryRun)))
}

private let dataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: orders}
    spec:
      schema: {order_id: string, amount: decimal}
    """

@Suite struct APITests {
    @Test func healthz() async throws {
        try await makeApplication().test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }

    @Test func aBadSpecIsA422WithLocatedDetails() async throws {
        let bad = dataset + "\n---\napiVersion: provision/v1\nkind: DataProduct\nmetadata: {name: p}\nspec:\n  from: orders\n  where: amout > 1\n  sink: {file: {path: p.jsonl}}\n"
        try await makeApplication().test(.router) { client in
            try await client.execute(uri: "/v1/apply", method: .post, body: try applyBody(bad)) { response in
                #expect(response.status == .unprocessableContent)
                let error = try json(response.body)["error"] as? [String: Any]
                #expect(error?["code"] as? String == "InvalidSpec")
                #expect(error?["message"] as? String == "1 error in the specs; nothing was applied")
                let detail = (error?["details"] as? [[String: Any]])?.first
                #expect(detail?["file"] as? String == "specs/eu.yaml")
                #expect(detail?["line"] as? Int == 12)
                #expect(detail?["column"] as? Int == 10)
                #expect(detail?["path"] as? String == "spec.where")
            }
            // Nothing was applied, not even the valid dataset.
            try await client.execute(uri: "/v1/datasets", method: .get) { response in
                #expect(String(buffer: response.body) == "[]")
            }
        }
    }

    /// Clients branch on these strings: renaming one breaks them.
    @Test func theErrorCodesAreTheDocumentedOnes() {
        #expect(APIErrorCode.allCases.map(\.rawValue) == [
            "InvalidSpec", "InvalidRequest", "InvalidRecord", "InvalidTopic", "Unauthorized", "Forbidden", "NotFound", "MethodNotAllowed", "Conflict",
            "Unsupported", "PayloadTooLarge", "RequestTimeout", "UnsupportedMediaType", "StateNotSaved", "SinkUnavailable", "Expired", "Internal",
        ])
    }

    @Test func errorsHaveStableCodes() async throws {
        try await makeApplication().test(.router) { client in
            try await client.execute(uri: "/v1/apply", method: .post, body: ByteBuffer(string: "{not json")) { response in
                #expect(response.status == .badRequest)
                let error = try json(response.body)["error"] as? [String: Any]
                #expect(error?["code"] as? String == "InvalidRequest")
            }
            for (method, uri) in [(HTTPRequest.Method.get, "/v1/products/absent"), (.delete, "/v1/products/absent"),
                                  (.post, "/v1/products/absent/pause"), (.get, "/v1/datasets/absent"),
                                  (.get, "/v1/topics/absent/records")] {
                try await client.execute(uri: uri, method: method) { response in
                    #expect(response.status == .notFound, "\(method) \(uri)")
                    let error = try json(response.body)["error"] as? [String: Any]
                    #expect(error?["code"] as? String == "NotFound")
                }
            }
            try await client.execute(uri: "/v1/topics/orders/records?key=id", method: .post,
                                     body: ByteBuffer(string: "{\"id\":\"a\"}\n{\"id\":\n")) { response in
                #expect(response.status == .badRequest)
                let error = try json(response.body)["error"] as? [String: Any]
                #expect(error?["code"] as? String == "InvalidRecord")
                #expect((error?["message"] as? String)?.hasPrefix("line 2: invalid JSON") == true)
            }
        }
    }

    /// The router's own errors are JSON like every other: an unknown route is 404, a known
    /// path with another method 405 naming the methods it takes.
    @Test func unknownRoutesAndWrongMethodsAnswerJSON() async throws {
        try await makeApplication().test(.router) { client in
            try await client.execute(uri: "/v1/nothing-here", method: .get) { response in
                #expect(response.status == .notFound)
                let error = try json(response.body)["error"] as? [String: Any]
                #expect(error?["code"] as? String == "NotFound")
                #expect(error?["message"] as? String == "no route for GET /v1/nothing-here")
            }
            for (method, uri, allowed) in [(HTTPRequest.Method.put, "/v1/products/p", "DELETE, GET"),
                                           (.delete, "/v1/apply", "POST"),
                                           (.patch, "/v1/topics/orders/records", "GET, POST")] {
                try await client.execute(uri: uri, method: method) { response in
                    #expect(response.status == .methodNotAllowed, "\(method) \(uri)")
                    #expect(response.headers[.allow] == allowed)
                    #expect(response.headers[.contentType] == "application/json")
                    let error = try json(response.body)["error"] as? [String: Any]
                    #expect(error?["code"] as? String == "MethodNotAllowed")
                }
            }
        }
    }

    /// Without `key` and `time`, the server takes them from the dataset on the topic, as the
    /// CLI does: a raw HTTP producer appends the same records.
    @Test func produceDefaultsToTheDatasetsKeyAndTime() async throws {
        let keyed = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: orders}\nspec:\n  key: order_id\n  time: placed_at\n"
            + "  schema: {order_id: string, placed_at: timestamp}\n"
        try await makeApplication().test(.router) { client in
            try await client.execute(uri: "/v1/apply", method: .post, body: try applyBody(keyed)) { response in
                #expect(response.status == .ok)
            }
            let line = "{\"order_id\":\"o-9\",\"placed_at\":\"2026-03-01T10:00:00Z\"}\n"
            try await client.execute(uri: "/v1/topics/orders/records", method: .post, body: ByteBuffer(string: line)) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/v1/topics/orders/records?from=0", method: .get) { response in
                let record = (try json(response.body)["records"] as? [[String: Any]])?.first
                #expect(record?["key"] as? String == "o-9")
                #expect(record?["time"] as? String == "2026-03-01T10:00:00Z")
            }
        }
    }

    @Test func produceThenReadBack() async throws {
        try await makeApplication().test(.router) { client in
            let lines = "{\"id\":\"a\",\"t\":\"2026-01-01T00:00:00Z\"}\n{\"id\":\"b\",\"t\":1000}\n"
            try await client.execute(uri: "/v1/topics/orders/records?key=id&time=t", method: .post, body: ByteBuffer(string: lines)) { response in
                #expect(response.status == .ok)
                let body = try json(response.body)
                #expect(body["count"] as? Int == 2)
                let partitions = body["partitions"] as? [[String: Any]] ?? []
                #expect(partitions.count == 1)
                #expect(partitions.first?["partition"] as? Int == 0)
                #expect(partitions.first?["firstOffset"] as? Int == 0)
                #expect(partitions.first?["count"] as? Int == 2)
            }
            try await client.execute(uri: "/v1/topics/orders/records?from=0&limit=10", method: .get) { response in
                let records = try json(response.body)["records"] as? [[String: Any]] ?? []
                #expect(records.map { $0["key"] as? String } == ["a", "b"])
                #expect(records.map { $0["time"] as? String } == ["2026-01-01T00:00:00Z", "1970-01-01T00:00:01Z"])
            }
        }
    }
}

@Suite struct RecordLinesTests {
    @Test func takesKeyAndTimeFromFields() throws {
        let lines = Array("{\"id\":\"o-1\",\"at\":\"2026-01-01T00:00:00Z\",\"x\":[1]}\n\n{\"id\":7,\"at\":5}\r\n".utf8)
        let records = try RecordLines.parse(lines, keyField: "id", timeField: "at", envelope: false, now: 99)
        #expect(records.map(\.key) == [Array("o-1".utf8), Array("7".utf8)])
        #expect(records.map(\.timestamp) == [1_767_225_600_000, 5])
        #expect(records[0].value == Array("{\"id\":\"o-1\",\"at\":\"2026-01-01T00:00:00Z\",\"x\":[1]}".utf8))
    }

    @Test(arguments: [
        ("{\"id\":1}\n[1]\n", "line 2: expected a JSON object"),
        ("{\"id\":1}\n{\"id\":2,}\n", "line 2: invalid JSON"),
        ("{\"x\":1}\n", "line 1: the key field 'id' is missing"),
        ("{\"id\":1,\"at\":\"soon\"}\n", "line 1: the time field 'at' is not an RFC 3339 timestamp or epoch milliseconds"),
        ("{\"id\":1,\"at\":9223372036854775807}\n", "line 1: the time field 'at' is not an RFC 3339 timestamp or epoch milliseconds of the years 0000 to 9999"),
    ])
    func reportsTheFirstBadLine(_ input: String, _ message: String) {
        do {
            _ = try RecordLines.parse(Array(input.utf8), keyField: "id", timeField: input.contains("at") ? "at" : nil,
                                      envelope: false, now: 0)
            Issue.record("accepted")
        } catch {
            #expect(error.description.hasPrefix(message), "\(error)")
        }
        // The command line checks a file with `validate` before it sends any of it: the same verdict.
        do {
            _ = try RecordLines.validate(Array(input.utf8), keyField: "id", timeField: input.contains("at") ? "at" : nil, envelope: false)
            Issue.record("validate accepted")
        } catch {
            #expect(error.description.hasPrefix(message), "\(error)")
        }
    }

    @Test func validateCountsTheRecordsParseMakes() throws {
        let lines = Array("{\"id\":\"o-1\",\"at\":5}\n  \n{\"id\":7,\"at\":6}\r\n{\"id\":8,\"at\":7}".utf8)
        let records = try RecordLines.parse(lines, keyField: "id", timeField: "at", envelope: false, now: 0)
        #expect(records.count == 3)
        #expect(try RecordLines.validate(lines, keyField: "id", timeField: "at", envelope: false) == 3)
        #expect(records.last?.value == Array("{\"id\":8,\"at\":7}".utf8))
    }

    /// Large inputs are parsed in pieces on the cores: the same records in the same order,
    /// and a bad line is reported with its number in the whole input, not in its piece.
    @Test func partsGiveWhatOnePassGives() async throws {
        // 4.5 MB: four pieces of at least 1 MiB. Blank and CRLF lines, so a piece's line
        // count is not its record count.
        var text = ""
        for index in 0..<30_000 {
            text += "{\"id\":\"o-\(index)\",\"at\":\(index),\"pad\":\"\(String(repeating: "x", count: 120))\"}"
            text += index % 1_000 == 0 ? "\r\n\n" : "\n"
        }
        let lines = Array(text.utf8)
        let whole = try RecordLines.parse(lines, keyField: "id", timeField: "at", envelope: false, now: 0)
        let inParts = try await RecordLines.parse(lines, keyField: "id", timeField: "at", envelope: false, now: 0, parts: 4)
        #expect(inParts.count == 30_000)
        #expect(inParts == whole)
        #expect(try await RecordLines.validate(lines, keyField: "id", timeField: "at", envelope: false, parts: 4) == 30_000)

        // Bad lines in the third and fourth pieces: the third's is the first, numbered as one pass numbers it.
        var broken = lines
        let thirdPiece = broken.count * 5 / 8, fourthPiece = broken.count * 7 / 8
        for start in [fourthPiece, thirdPiece] {
            let lineStart = broken[..<start].lastIndex(of: 0x0A)! + 1
            broken[lineStart] = UInt8(ascii: "[")
        }
        var expected = ""
        do {
            _ = try RecordLines.parse(broken, keyField: "id", timeField: "at", envelope: false, now: 0)
            Issue.record("one pass accepted a bad line")
        } catch { expected = error.description }
        #expect(expected.hasPrefix("line "))
        #expect(Int(expected.dropFirst(5).prefix { $0.isNumber })! > 15_000)
        do {
            _ = try await RecordLines.parse(broken, keyField: "id", timeField: "at", envelope: false, now: 0, parts: 4)
            Issue.record("parts accepted a bad line")
        } catch { #expect(error.description == expected) }
        do {
            _ = try await RecordLines.validate(broken, keyField: "id", timeField: "at", envelope: false, parts: 4)
            Issue.record("parts accepted a bad line when validating")
        } catch { #expect(error.description == expected) }
    }

    @Test func piecesEndAtLineEndsAndCoverTheInput() {
        let lines = Array("a\nbb\n\nccc\nd".utf8)
        for count in 1...6 {
            let pieces = RecordLines.pieces(of: lines, count: count)
            #expect(pieces.first?.lowerBound == 0 && pieces.last?.upperBound == lines.count)
            #expect(zip(pieces, pieces.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            #expect(pieces.dropLast().allSatisfy { lines[$0.upperBound - 1] == 0x0A }, "\(count): \(pieces)")
            #expect(pieces.count <= count)
        }
    }

    @Test func envelopesCarryTombstonesAndHeaders() throws {
        let lines = Array(#"""
            {"key":"k","value":{"a":1},"time":"2026-01-01T00:00:00Z","headers":{"h":"v"}}
            {"key":"k","value":null}
            """#.utf8)
        let records = try RecordLines.parse(lines, keyField: nil, timeField: nil, envelope: true, now: 42)
        #expect(records.count == 2)
        #expect(records[0].value == Array(#"{"a":1}"#.utf8))
        #expect(records[0].headers == [LogHeader(name: "h", text: "v")])
        #expect(records[1].value == nil)
        #expect(records[1].timestamp == 42)
        #expect(throws: RecordLines.LineError.self) {
            try RecordLines.parse(Array(#"{"value":null}"#.utf8), keyField: nil, timeField: nil, envelope: true, now: 0)
        }
    }
}
