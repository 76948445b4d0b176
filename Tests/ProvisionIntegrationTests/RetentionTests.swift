import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// History that retention removes is never skipped silently: age keeps what a product has not
/// read, and when the size limit removes it anyway the product stops, says how many records
/// it lost, and goes on only when told to.
private let eventsDataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: events, owner: ops}
    spec:
      topic: events
      key: event_id
      schema: {event_id: string, n: integer}
    """

private let copyProduct = """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: copy, team: ops}
    spec:
      from: events
      backfill: all
      sink: {file: {path: ops/copy.jsonl}}
    """

/// Produces in requests of 50 records: one request's records go to one segment.
private func produce(_ server: ServerProcess, _ range: Range<Int>) async throws {
    for start in stride(from: range.lowerBound, to: range.upperBound, by: 50) {
        try await produceRequest(server, start..<min(start + 50, range.upperBound))
    }
}

private func produceRequest(_ server: ServerProcess, _ range: Range<Int>) async throws {
    let lines = range.map { #"{"event_id":"e-\#($0)","n":\#($0),"pad":"\#(String(repeating: "p", count: 80))"}"# }.joined(separator: "\n") + "\n"
    let reply = try await httpRequest(.POST, server.url + "/v1/topics/events/records?key=event_id", body: Data(lines.utf8))
    #expect(reply.status == 200)
}

/// The offset of the first record the log still has.
private func logStart(_ server: ServerProcess) async throws -> Int {
    let page = try await httpRequest(.GET, server.url + "/v1/topics/events/records?from=0&limit=1")
    let records = (page.json as? [String: Any])?["records"] as? [[String: Any]] ?? []
    return (records.first?["offset"] as? NSNumber)?.intValue ?? -1
}

/// Ages every closed segment of the topic as if last appended to a day ago.
private func ageSegments(_ server: ServerProcess) throws {
    let directory = server.dataDirectory + "/log"
    let enumerator = FileManager.default.enumerator(atPath: directory)
    var segments: [String] = []
    while let path = enumerator?.nextObject() as? String {
        if path.contains("events"), path.hasSuffix(".log") { segments.append(directory + "/" + path) }
    }
    segments.sort()
    #expect(segments.count > 3, "the test needs several segments")
    for segment in segments.dropLast() {
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-86_400)], ofItemAtPath: segment)
    }
}

/// A server with small segments and these retention options, where the product read the
/// first 100 records and was paused before 900 more arrived.
private func pausedBehindNewRecords(retention: [String]) async throws -> ServerProcess {
    let server = ServerProcess()
    server.arguments = ["--segment-bytes", "4096"] + retention
    try await server.start()
    #expect(try server.ctl(["apply", "-f", try writeSpecs(eventsDataset, copyProduct, to: server.dataDirectory + "-specs")]).status == 0)
    try await produce(server, 0..<100)
    _ = try await server.waitForProduct("copy", timeout: .seconds(60)) { ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == 100 }
    #expect(try server.ctl(["pause", "product", "copy"]).status == 0)
    _ = try await server.waitForProduct("copy", timeout: .seconds(30)) { $0.phase == "Paused" }
    try await produce(server, 100..<1000)
    return server
}

@Suite(.serialized, .timeLimit(.minutes(8))) struct RetentionTests {
    @Test func retentionByAgeKeepsWhatAPausedProductHasNotRead() async throws {
        let server = try await pausedBehindNewRecords(retention: ["--retention", "1h"])
        defer { server.stop() }
        // A day old by their files: past the age limit. Retention runs when the server starts.
        try ageSegments(server)
        try await server.restart()
        let start = try await logStart(server)
        #expect(start > 0 && start <= 100, "retention removed records the paused product had not read (the log starts at \(start))")
        #expect(try server.ctl(["resume", "product", "copy"]).status == 0)
        let product = try await server.waitForProduct("copy", timeout: .seconds(60)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == 1000
        }
        #expect(product.status["recordsLostToRetention"] == nil)
        let lines = try String(contentsOfFile: server.fileRoot + "/ops/copy.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 1000)
    }

    @Test func recordsTheSizeLimitRemovedStopTheProductUntilTheLossIsAccepted() async throws {
        let server = try await pausedBehindNewRecords(retention: ["--retention-bytes", "16384"])
        defer { server.stop() }
        try await server.restart()
        let start = try await logStart(server)
        #expect(start > 100, "the size limit did not remove unread records; the test proves nothing")
        let lost = start - 100

        #expect(try server.ctl(["resume", "product", "copy"]).status == 0)
        let stopped = try await server.waitForProduct("copy", timeout: .seconds(60)) { product in
            let conditions = product.status["conditions"] as? [[String: Any]] ?? []
            return conditions.contains { $0["type"] as? String == "Stalled" && $0["reason"] as? String == "RecordsLostToRetention" }
        }
        let stalled = (stopped.status["conditions"] as? [[String: Any]] ?? []).first { $0["type"] as? String == "Stalled" }
        #expect((stalled?["message"] as? String)?.contains("retention removed \(lost) records of events partition 0") == true,
                "\(String(describing: stalled))")
        #expect((stalled?["message"] as? String)?.contains("provisionctl resume product copy --accept-loss") == true)
        // It stays stopped: no retry moves it past the loss.
        try await Task.sleep(for: .seconds(3))
        let still = try await server.fetchProduct("copy")
        #expect((still?["status"] as? [String: Any])?["checkpoint"] as? [String: Int] == ["0": 100])
        #expect(((still?["status"] as? [String: Any])?["phase"] as? String) == "Failed")

        // A restart does not forget it either.
        try await server.restart()
        _ = try await server.waitForProduct("copy", timeout: .seconds(60)) { product in
            (product.status["conditions"] as? [[String: Any]] ?? []).contains { $0["reason"] as? String == "RecordsLostToRetention" }
        }

        let accepted = try server.ctl(["resume", "product", "copy", "--accept-loss"])
        #expect(accepted.status == 0, "\(accepted.errorOutput)")
        let live = try await server.waitForProduct("copy", timeout: .seconds(60)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == 1000
        }
        #expect((live.status["recordsLostToRetention"] as? NSNumber)?.intValue == lost)
        let lines = try String(contentsOfFile: server.fileRoot + "/ops/copy.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 100 + (1000 - start))
    }
}
