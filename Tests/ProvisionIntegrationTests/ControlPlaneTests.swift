import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

/// A product whose output is a file that its deletion removes.
private func controlProduct(_ name: String, threshold: Int, version: String? = nil) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: risk\(version.map { ", resourceVersion: \"\($0)\"" } ?? "")}
    spec:
      from: orders
      where: amount > \(threshold)
      select: {order_id: order_id, amount: amount}
      sink: {file: {path: cp/\(name).jsonl}}
      deletionPolicy: Delete
    """
}

private func controlDataset(_ name: String) -> String {
    catalogSpec.replacingOccurrences(of: "metadata: {name: orders, owner: sales}", with: "metadata: {name: \(name), owner: sales}")
        .replacingOccurrences(of: "topic: orders", with: "topic: \(name)")
}

/// What a client was told: per product, each acknowledged write with the version it took
/// (the threshold written, or nil for a delete).
private actor Acknowledgements {
    private(set) var writes: [String: [(version: UInt64, threshold: Int?)]] = [:]
    private(set) var serverErrors: [String] = []
    private(set) var conflicts = 0
    private(set) var acknowledged = 0
    private(set) var datasets: Set<String> = []

    func datasetCreated(_ name: String) { datasets.insert(name) }

    func record(_ name: String, version: UInt64, threshold: Int?) {
        writes[name, default: []].append((version, threshold))
        acknowledged += 1
    }

    func conflict() { conflicts += 1 }
    func serverError(_ text: String) { serverErrors.append(text) }

    /// The last acknowledged write of each product: the one with the highest version.
    func last() -> [String: Int?] {
        writes.mapValues { entries in entries.max { $0.version < $1.version }!.threshold }
    }
}

private func apply(_ server: ServerProcess, _ documents: [String]) async throws -> HTTPReply {
    let body: [String: Any] = ["files": [["name": "client.yaml", "content": documents.joined(separator: "\n---\n")]],
                               "dryRun": false, "prune": false, "managedBy": "cli"]
    return try await httpRequest(.POST, server.url + "/v1/apply", body: try JSONSerialization.data(withJSONObject: body))
}

/// A watch's lines, read until one meets `last` (included).
private func watchLines(_ response: HTTPClientResponse, until last: ([String: String]) -> Bool) async throws -> [[String: String]] {
    var seen: [[String: String]] = []
    var buffered = Data()
    for try await chunk in response.body {
        buffered.append(contentsOf: chunk.readableBytesView)
        while let newline = buffered.firstIndex(of: 0x0A) {
            let line = buffered[buffered.startIndex..<newline]
            buffered = Data(buffered[(newline + 1)...])
            seen.append(try JSONSerialization.jsonObject(with: line) as! [String: String])
            if last(seen[seen.count - 1]) { return seen }
        }
    }
    return seen
}

/// The version the apply gave the product (or dataset), from its answer.
private func appliedVersion(_ reply: HTTPReply, product: String? = nil, dataset: String? = nil) -> UInt64? {
    let changes = (reply.json as? [String: Any])?["changes"] as? [[String: Any]] ?? []
    let change = changes.first {
        product != nil ? $0["kind"] as? String == "DataProduct" && $0["name"] as? String == product
            : $0["kind"] as? String == "Dataset" && $0["name"] as? String == dataset
    }
    return (change?["resourceVersion"] as? String).flatMap { UInt64($0) }
}

/// Every acknowledged write is what the server holds: the spec of the last write of each
/// product, or no product (and no output file) when that write was a delete.
private func checkLastWrites(_ server: ServerProcess, _ last: [String: Int?], when: String) async throws {
    // Deletions finish in the background: wait until none is in progress.
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
        let listed = try await httpRequest(.GET, server.url + "/v1/products").json as? [[String: Any]] ?? []
        if !listed.contains(where: { ($0["metadata"] as? [String: Any])?["deleting"] as? Bool == true }) { break }
        try await Task.sleep(for: .milliseconds(200))
    }
    var wrong: [String] = []
    for (name, threshold) in last.sorted(by: { $0.key < $1.key }) {
        let product = try await server.fetchProduct(name)
        let stored = (product?["spec"] as? [String: Any])?["where"] as? String
        if let threshold {
            if stored != "amount > \(threshold)" { wrong.append("\(name): acknowledged amount > \(threshold), holds \(stored ?? "nothing")") }
        } else {
            if product != nil { wrong.append("\(name): acknowledged deleted, holds \(stored ?? "?")") }
            if FileManager.default.fileExists(atPath: server.fileRoot + "/cp/\(name).jsonl") {
                wrong.append("\(name): deleted with deletionPolicy Delete, its output remains")
            }
        }
    }
    #expect(wrong.isEmpty, "\(when): \(wrong.count) of \(last.count) products differ from their last acknowledged write:\n\(wrong.prefix(20).joined(separator: "\n"))")
}

@Suite(.serialized, .timeLimit(.minutes(6))) struct ControlPlaneTests {
    /// 20 clients for 30 s: each changes and deletes its own products, all of them change a
    /// few shared ones (half of those changes by compare-and-swap on the version they read),
    /// and a tenth of the applies also create a dataset. Afterwards, and after a restart,
    /// every product holds the last write acknowledged for it, deleted products and their
    /// outputs are gone, and no request had a server error (409 is an answer, not an error).
    @Test func twentyClientsLoseNoAcknowledgedWrite() async throws {
        let server = ServerProcess()
        server.arguments = ["--log-level", "warning"]
        try await server.start()
        defer { server.stop() }
        #expect(try await apply(server, [catalogSpec]).status == 200)
        let acknowledgements = Acknowledgements()
        let deadline = ContinuousClock.now + .seconds(30)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<20 {
                group.addTask {
                    var random = SystemRandomNumberGenerator()
                    var step = 0
                    while ContinuousClock.now < deadline {
                        step += 1
                        let threshold = step * 100 + client  // never the same twice
                        let own = "c\(client)-\(Int.random(in: 0..<3, using: &random))"
                        let shared = "shared-\(Int.random(in: 0..<4, using: &random))"
                        let choice = Int.random(in: 0..<100, using: &random)
                        var name = own
                        var dataset: String?
                        var reply: HTTPReply
                        if choice < 45 {
                            reply = try await apply(server, [controlProduct(own, threshold: threshold)])
                        } else if choice < 65 {
                            name = shared
                            reply = try await apply(server, [controlProduct(shared, threshold: threshold)])
                        } else if choice < 75 {
                            name = shared
                            let read = try await server.fetchProduct(shared)
                            let version = (read?["metadata"] as? [String: Any])?["resourceVersion"] as? String
                            guard let version else { continue }
                            reply = try await apply(server, [controlProduct(shared, threshold: threshold, version: version)])
                        } else if choice < 85 {
                            dataset = "ds-\(client)-\(step)"
                            reply = try await apply(server, [controlDataset(dataset!), controlProduct(own, threshold: threshold)])
                        } else {
                            let deleted = try await httpRequest(.DELETE, server.url + "/v1/products/\(own)")
                            if deleted.status == 202, let version = ((deleted.json as? [String: Any])?["resourceVersion"] as? String).flatMap({ UInt64($0) }) {
                                await acknowledgements.record(own, version: version, threshold: nil)
                            } else if deleted.status != 404 {
                                await acknowledgements.serverError("DELETE \(own): \(deleted.status) \(String(decoding: deleted.body, as: UTF8.self))")
                            }
                            continue
                        }
                        switch reply.status {
                        case 200:
                            guard let version = appliedVersion(reply, product: name) else {
                                await acknowledgements.serverError("apply \(name): no resourceVersion in \(String(decoding: reply.body, as: UTF8.self))")
                                continue
                            }
                            await acknowledgements.record(name, version: version, threshold: threshold)
                            if let dataset { await acknowledgements.datasetCreated(dataset) }
                        case 409:
                            await acknowledgements.conflict()
                        default:
                            await acknowledgements.serverError("apply \(name): \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let serverErrors = await acknowledgements.serverErrors
        #expect(serverErrors.isEmpty, "\(serverErrors.count) server errors:\n\(serverErrors.prefix(10).joined(separator: "\n"))")
        let acknowledged = await acknowledgements.acknowledged
        #expect(acknowledged > 300, "only \(acknowledged) writes were acknowledged in 30 s")
        let last = await acknowledgements.last()
        try await checkLastWrites(server, last, when: "after the run")
        // Every dataset an acknowledged apply created exists (none lost to a concurrent apply).
        let created = await acknowledgements.datasets
        #expect(created.count > 10, "only \(created.count) datasets were created")
        func datasetNames() async throws -> Set<String> {
            // More than a page of datasets may have been created: read every page.
            let listed = try await httpListAll(server.url + "/v1/datasets")
            return Set(listed.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String })
        }
        #expect(created.subtracting(try await datasetNames()).isEmpty, "acknowledged datasets missing")
        #expect(server.stop() == 0)
        try await server.start()
        try await checkLastWrites(server, last, when: "after a restart")
        #expect(created.subtracting(try await datasetNames()).isEmpty, "acknowledged datasets missing after a restart")
    }

    /// Killed in the middle of a commit's write, and just after a commit is on disk but
    /// before its answer: on restart the store loads, every acknowledged write is there, and
    /// the torn commit (never acknowledged) is not.
    @Test(arguments: ["store.commit.torn=kill@25", "store.commit.synced=kill@25"])
    func killedDuringAppliesKeepsEveryAcknowledgedWrite(failpoint: String) async throws {
        let server = ServerProcess()
        // Status is written only at the end of a long resync, so the failpoint counts applies.
        server.environment["PROVISION_FAILPOINTS"] = failpoint
        try await server.start()
        defer { server.stop() }
        var acknowledged: [String: Int?] = [:]
        var unanswered: String?
        #expect(try await apply(server, [catalogSpec]).status == 200)
        for step in 0..<200 {
            let name = "p\(step % 7)"
            do {
                if step % 5 == 4 {
                    let reply = try await httpRequest(.DELETE, server.url + "/v1/products/\(name)", timeout: .seconds(10))
                    if reply.status == 202 { acknowledged[name] = .some(nil) }
                } else {
                    let reply = try await apply(server, [controlProduct(name, threshold: step)])
                    #expect(reply.status == 200)
                    if reply.status == 200 { acknowledged[name] = step }
                }
            } catch {
                unanswered = name  // the server died during this request
                break
            }
        }
        try server.waitForFailpoint(String(failpoint.prefix { $0 != "=" }))
        #expect(unanswered != nil, "the server died between requests, not during one")
        try await server.restart()
        // The unanswered write may or may not have committed; every answered one did.
        var expected = acknowledged
        if let unanswered { expected[unanswered] = nil }
        try await checkLastWrites(server, expected, when: "after the kill")
    }

    /// `diff -f` shows each changed field with its values before and after and whether the
    /// output is rebuilt, and exits 1; with nothing to change it exits 0. A stale version in
    /// an applied document is a 409 Conflict naming the versions.
    @Test func diffShowsFieldsAndAStaleVersionIsAConflict() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let specs = server.dataDirectory + "-specs"
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, controlProduct("p", threshold: 10), to: specs)]).status == 0)
        let same = try server.ctl(["diff", "-f", try writeSpecs(catalogSpec, controlProduct("p", threshold: 10), to: specs)])
        #expect(same.status == 0, "\(same.output)\(same.errorOutput)")
        #expect(same.output.contains("dataproduct/p unchanged"))
        let changed = try server.ctl(["diff", "-f", try writeSpecs(catalogSpec, controlProduct("p", threshold: 20), to: specs)])
        #expect(changed.status == 1, "\(changed.output)\(changed.errorOutput)")
        #expect(changed.output.contains("dataproduct/p update-rebuild"), "\(changed.output)")
        #expect(changed.output.contains("    spec.where: \"amount > 10\" -> \"amount > 20\""), "\(changed.output)")
        #expect(changed.output.contains("    output: rebuilt from the start of the backfill"), "\(changed.output)")
        // Nothing changed on the server.
        #expect((try await server.fetchProduct("p")?["spec"] as? [String: Any])?["where"] as? String == "amount > 10")
        let bad = try server.ctl(["diff", "-f", try writeSpecs(catalogSpec, controlProduct("p", threshold: 20) + "\n  bogus: 1", to: specs)])
        #expect(bad.status == 2, "\(bad.output)\(bad.errorOutput)")

        let version = try #require((try await server.fetchProduct("p")?["metadata"] as? [String: Any])?["resourceVersion"] as? String)
        let current = try await apply(server, [controlProduct("p", threshold: 30, version: version)])
        #expect(current.status == 200)
        let stale = try await apply(server, [controlProduct("p", threshold: 40, version: version)])
        #expect(stale.status == 409)
        let error = (stale.json as? [String: Any])?["error"] as? [String: Any]
        #expect(error?["code"] as? String == "Conflict")
        let message = ((error?["details"] as? [[String: Any]])?.first?["message"] as? String) ?? ""
        #expect(message.hasPrefix("product 'p' was changed since resourceVersion \(version) (it is at "), "\(message)")
        #expect((try await server.fetchProduct("p")?["spec"] as? [String: Any])?["where"] as? String == "amount > 30")
    }

    /// A list says which store version it reflects; `GET /v1/watch` from there streams each
    /// later change, in order: a product
    /// created, its status as it starts, its deletion. A restarted server keeps no history,
    /// so a watch from before its start is `410 Expired` (list again, then watch).
    @Test func aWatchStreamsEveryChangeAfterItsVersion() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let created = try await apply(server, [catalogSpec])
        // List, then watch from the version the list reflects.
        var list = HTTPClientRequest(url: server.url + "/v1/products")
        list.headers.add(name: "Authorization", value: "Bearer \(testAdminToken)")
        let listed = try await testHTTPClient.execute(list, deadline: .now() + .seconds(30))
        _ = try await listed.body.collect(upTo: 1 << 20)
        let start = try #require(listed.headers.first(name: "Provision-Resource-Version").flatMap { UInt64($0) })
        #expect(start == appliedVersion(created, dataset: "orders"))
        var request = HTTPClientRequest(url: server.url + "/v1/watch?resourceVersion=\(start)")
        request.method = .GET
        request.headers.add(name: "Authorization", value: "Bearer \(testAdminToken)")
        let response = try await testHTTPClient.execute(request, deadline: .now() + .seconds(60))
        #expect(response.status.code == 200)
        // A team's watch, from the same version: the catalog and its own products only.
        let growthToken = try server.createToken("growth-reader", team: "growth", role: "reader")
        var teamRequest = HTTPClientRequest(url: server.url + "/v1/watch?resourceVersion=\(start)")
        teamRequest.headers.add(name: "Authorization", value: "Bearer \(growthToken)")
        let teamResponse = try await testHTTPClient.execute(teamRequest, deadline: .now() + .seconds(60))
        #expect(teamResponse.status.code == 200)
        #expect(try await apply(server, [controlProduct("watched", threshold: 5)]).status == 200)
        #expect(try await httpRequest(.DELETE, server.url + "/v1/products/watched").status == 202)
        let seen = try await watchLines(response) { $0["kind"] == "DataProduct" && $0["type"] == "deleted" }
        let product = seen.filter { $0["kind"] == "DataProduct" }.map { $0["type"]! }
        // Created, marked for deletion, then forgotten once its output was removed.
        #expect(product == ["changed", "changed", "deleted"], "\(seen)")
        #expect(seen.contains { $0["kind"] == "ProductStatus" && $0["name"] == "watched" && $0["type"] == "changed" })
        let versions = seen.compactMap { $0["resourceVersion"].flatMap { UInt64($0) } }
        #expect(versions == versions.sorted() && versions.first.map { $0 > start } == true)

        // Applied after the other team's product went: once the team's watch shows it, every
        // earlier change has gone past it.
        let grown = controlProduct("grown", threshold: 5).replacingOccurrences(of: "team: risk", with: "team: growth")
        #expect(try await apply(server, [grown]).status == 200)
        let teamSeen = try await watchLines(teamResponse) { $0["kind"] == "DataProduct" && $0["name"] == "grown" }
        #expect(teamSeen.last?["name"] == "grown")
        #expect(!teamSeen.contains { $0["name"] == "watched" }, "a team's watch showed another team's product: \(teamSeen)")

        #expect(server.stop() == 0)
        try await server.start()
        let expired = try await httpRequest(.GET, server.url + "/v1/watch?resourceVersion=\(start)")
        #expect(expired.status == 410)
        #expect(((expired.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "Expired")
    }
}
