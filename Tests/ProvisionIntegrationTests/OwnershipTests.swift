import Foundation
import Testing

/// Writers own what they create: through the CLI (`cli`) and the API (`managedBy`), a change
/// to another writer's product is a conflict unless forced, and `--prune` deletes only the
/// writer's own products.
@Suite(.serialized, .timeLimit(.minutes(8))) struct OwnershipTests {
    private func apiApply(_ server: ServerProcess, _ yaml: String, as writer: String, prune: Bool = false) async throws -> HTTPReply {
        let body: [String: Any] = ["files": [["name": "team.yaml", "content": yaml]], "dryRun": false, "prune": prune, "managedBy": writer]
        return try await httpRequest(.POST, server.url + "/v1/apply", body: try JSONSerialization.data(withJSONObject: body))
    }

    private func managedBy(_ server: ServerProcess, _ name: String) async throws -> String? {
        (try await server.fetchProduct(name)?["metadata"] as? [String: Any])?["managedBy"] as? String
    }

    @Test func writersChangeAndPruneOnlyWhatTheyManage() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let cliProduct = productSpec(backfill: "all")
        let teamProduct = productSpec(backfill: "all").replacingOccurrences(of: "name: eu-large-orders", with: "name: team-orders")
            .replacingOccurrences(of: "risk/eu-large-orders.jsonl", with: "risk/team-orders.jsonl")
        let specs = server.dataDirectory + "-specs"
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, cliProduct, to: specs)]).status == 0)
        let created = try await apiApply(server, teamProduct, as: "api:risk")
        #expect(created.status == 200, "\(String(decoding: created.body, as: UTF8.self))")
        #expect(try await managedBy(server, "eu-large-orders") == "cli")
        #expect(try await managedBy(server, "team-orders") == "api:risk")

        // The team changing the CLI's product: 409, located, nothing applied.
        let conflicting = try await apiApply(server, cliProduct.replacingOccurrences(of: "amount > 1000", with: "amount > 5"), as: "api:risk")
        #expect(conflicting.status == 409)
        let error = (conflicting.json as? [String: Any])?["error"] as? [String: Any]
        #expect(error?["code"] as? String == "Conflict")
        let detail = (error?["details"] as? [[String: Any]])?.first
        #expect(detail?["message"] as? String == "product 'eu-large-orders' is managed by cli, not api:risk; apply with --force to take it over")
        #expect((try await server.fetchProduct("eu-large-orders")?["spec"] as? [String: Any])?["where"] as? String == "amount > 1000 and region == \"EU\"")

        // The CLI pruning with only its catalog: its own product goes, the team's stays.
        let pruned = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, to: specs), "--prune", "--dry-run"])
        #expect(pruned.output.contains("dataproduct/eu-large-orders delete"), "\(pruned.output)")
        #expect(!pruned.output.contains("team-orders"), "\(pruned.output)")

        // The CLI changing the team's product is refused, then forced: it takes it over.
        let changed = teamProduct.replacingOccurrences(of: "amount > 1000", with: "amount > 2000")
        let refused = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, changed, to: specs)])
        #expect(refused.status != 0)
        #expect(refused.errorOutput.contains("product 'team-orders' is managed by api:risk, not cli; apply with --force to take it over"),
                "\(refused.errorOutput)")
        let forced = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, changed, to: specs), "--force"])
        #expect(forced.status == 0, "\(forced.errorOutput)")
        #expect(try await managedBy(server, "team-orders") == "cli")
    }
}
