import Testing
import ProvisionModel
import ProvisionPipeline
@testable import ProvisionControl

/// The planner's rules for a git source's objects, as plain values: a source never takes
/// over another writer's object (that document is left out, the rest applies); another
/// writer may change a source's object (with a warning), and the source's next sync reverts
/// it, or with `driftPolicy: detect` reports it; `provision/prune: disabled` keeps a product
/// the source no longer lists.
private let catalog = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: orders}
    spec:
      key: order_id
      schema: {order_id: string, amount: decimal}
    """

private func product(_ name: String, threshold: Int = 1, annotations: String = "") -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: risk\(annotations)}
    spec:
      from: orders
      where: amount > \(threshold)
      sink: {file: {path: out/\(name).jsonl}}
    """
}

private func source(_ name: String, drift: String = "revert") -> String {
    """
    apiVersion: provision/v1
    kind: GitSource
    metadata: {name: \(name), team: risk}
    spec: {url: "git://127.0.0.1/specs.git", driftPolicy: \(drift)}
    """
}

private func documents(_ yaml: String...) throws -> [SpecDocument] {
    let datasets = SpecLoader.load([SpecFile(name: "catalog.yaml", content: catalog)]).documents.compactMap { document -> Dataset? in
        if case .dataset(let dataset, _) = document { return dataset }
        return nil
    }
    let result = SpecLoader.load([SpecFile(name: "specs.yaml", content: yaml.joined(separator: "\n---\n"))], catalog: datasets)
    guard result.errors.isEmpty else { throw ApplyRejected(errors: result.errors) }
    return result.documents
}

private let planner = ApplyPlanner(rules: OutputRules(location: { spec in
    if case .file(let file) = spec.sink { return file.path }
    return "other"
}, rebuildsInPlace: { _ in false }))

private let gitops = Writer("gitops:specs"), team = Writer("api:risk")

/// A state with the catalog, the source `specs` (with `drift`) and what it applied of `products`.
private func synced(_ products: [String], drift: String = "revert") throws -> ControlState {
    let withSource = try planner.plan(current: ControlState(), documents: documents(catalog, source("specs", drift: drift)),
                                      writer: Writer("cli"), now: 1).next
    return try planner.plan(current: withSource, documents: documents(products.joined(separator: "\n---\n")), writer: gitops,
                            prune: true, now: 2).next
}

@Suite struct GitSourcePlanTests {
    @Test func aSourceLeavesOutWhatAnotherWriterManagesAndAppliesTheRest() throws {
        var state = try synced([product("a")])
        state = try planner.plan(current: state, documents: documents(product("by-hand")), writer: team, now: 3).next
        let plan = try planner.plan(current: state, documents: documents(product("a", threshold: 5), product("by-hand", threshold: 9)),
                                    writer: gitops, prune: true, now: 4)
        #expect(plan.changes.map { "\($0.name) \($0.action.rawValue)" } == ["a update-rebuild"])
        #expect(plan.conflicts.map(\.message) == ["product 'by-hand' is managed by api:risk, not by this source; it is left as it is"])
        #expect(plan.next.products["by-hand"]?.product.spec.filter == "amount > 1")
        #expect(plan.next.products["a"]?.product.spec.filter == "amount > 5")
    }

    @Test func aChangeOutsideGitIsAcceptedWithAWarningAndRevertedByTheNextSync() throws {
        let state = try synced([product("a"), product("b")])
        let edit = try planner.plan(current: state, documents: documents(product("a", threshold: 7)), writer: team, now: 3)
        #expect(edit.warnings == ["product 'a' is managed by git source 'specs': its next sync puts back what git says"])
        #expect(edit.next.products["a"]?.manager == gitops, "the source keeps what it manages")
        #expect(edit.next.products["a"]?.changedBy == team)
        let sync = try planner.plan(current: edit.next, documents: documents(product("a"), product("b")), writer: gitops, prune: true, now: 4)
        #expect(sync.drift == [DriftReport(kind: .dataProduct, name: "a", changedBy: "api:risk",
                                           fields: [FieldChange(path: "spec.where", from: "\"amount > 7\"", to: "\"amount > 1\"")],
                                           reverted: true)])
        #expect(sync.next.products["a"]?.product.spec.filter == "amount > 1")
        #expect(sync.next.products["a"]?.changedBy == gitops)
        // Reverted once: the sync after it finds nothing to report.
        let again = try planner.plan(current: sync.next, documents: documents(product("a"), product("b")), writer: gitops, prune: true, now: 5)
        #expect(again.drift.isEmpty && again.changes.allSatisfy { $0.action == .unchanged })
    }

    @Test func detectReportsTheChangeAndLeavesIt() throws {
        let state = try synced([product("a")], drift: "detect")
        let edit = try planner.plan(current: state, documents: documents(product("a", threshold: 7)), writer: team, now: 3)
        #expect(edit.warnings.first?.contains("reported as drift") == true)
        let sync = try planner.plan(current: edit.next, documents: documents(product("a")), writer: gitops, prune: true, now: 4)
        #expect(sync.drift.map(\.reverted) == [false] && sync.drift.first?.changedBy == "api:risk")
        #expect(sync.next.products["a"]?.product.spec.filter == "amount > 7")
        #expect(sync.changes.map(\.action) == [.unchanged])
        // Git catching up with the change ends the drift.
        let caughtUp = try planner.plan(current: sync.next, documents: documents(product("a", threshold: 7)), writer: gitops, prune: true, now: 5)
        #expect(caughtUp.drift.isEmpty)
    }

    @Test func pruneDisabledKeepsAProductTheSourceNoLongerLists() throws {
        let state = try synced([product("a"), product("kept", annotations: ", annotations: {provision/prune: disabled}"), product("c")])
        let plan = try planner.plan(current: state, documents: documents(product("a")), writer: gitops, prune: true, now: 3)
        #expect(plan.changes.filter { $0.action == .delete }.map(\.name) == ["c"])
        #expect(plan.keptFromPrune == ["kept"])
        #expect(plan.next.products["kept"]?.deleting == false)
    }

    @Test func aRevisionCannotDefineGitSourcesAndAnotherWriterIsStillRefused() throws {
        let state = try synced([product("a")])
        let messages: (ApplyRejected) -> [String] = { $0.errors.map(\.message) }
        #expect(throws: ApplyRejected.self) { try planner.plan(current: state, documents: documents(source("nested")), writer: gitops, now: 3) }
        do {
            _ = try planner.plan(current: state, documents: documents(source("nested")), writer: gitops, now: 3)
        } catch let error as ApplyRejected {
            #expect(messages(error).first?.hasPrefix("a git source's revision cannot define git sources") == true)
        }
        // Two writers that are not sources keep refusing each other.
        let byTeam = try planner.plan(current: state, documents: documents(product("mine")), writer: team, now: 4).next
        do {
            _ = try planner.plan(current: byTeam, documents: documents(product("mine", threshold: 3)), writer: Writer("cli"), now: 5)
            Issue.record("a change to another writer's product was planned")
        } catch let error as ApplyRejected {
            #expect(error.isConflict && messages(error).first?.contains("apply with --force") == true)
        }
    }

    @Test func aGitSourceSpecIsReadStrictly() {
        func errors(_ spec: String) -> [String] {
            SpecLoader.load([SpecFile(name: "s.yaml", content: "apiVersion: provision/v1\nkind: GitSource\nmetadata: {name: s}\nspec:\n" + spec)])
                .errors.map { "\($0.line):\($0.column) \($0.path): \($0.message)" }
        }
        #expect(errors("  url: https://git.example/specs.git\n  interval: 30s\n  path: ./products/\n").isEmpty)
        #expect(errors("  url: https://user:hunter2@git.example/specs.git\n")
            == ["5:8 spec.url: credentials do not belong in a spec; use spec.credentials with '${secret:NAME}'"])
        #expect(errors("  url: https://git.example/x.git\n  credentials: {password: hunter2}\n")
            == ["6:27 spec.credentials.password: credentials do not belong in a spec; use '${secret:NAME}'"])
        #expect(errors("  url: https://git.example/x.git\n  path: ../outside\n") == ["6:9 spec.path: '../outside' must be a directory inside the repository"])
        #expect(errors("  url: https://git.example/x.git\n  interval: 10ms\n") == ["6:13 spec.interval: a git source is fetched at most once a second"])
        #expect(errors("  url: https://git.example/x.git\n  driftPolicy: ignore\n")
            == ["6:16 spec.driftPolicy: unknown drift policy 'ignore' (expected 'revert' or 'detect')"])
        #expect(errors("  url: https://git.example/x.git\n  pruneLimit: 150%\n")
            == ["6:15 spec.pruneLimit: '150%' is not a share of the source's products (examples: 50%, 100%)"])
        #expect(errors("  url: --upload-pack=touch\n") == ["5:8 spec.url: '--upload-pack=touch' is not a repository URL or path"])
    }
}
