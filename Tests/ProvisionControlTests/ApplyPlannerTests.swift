import Testing
import ProvisionModel
import ProvisionPipeline
@testable import ProvisionControl

/// The planner alone: state and documents in, changes out; no server, no log, no sink.
private let dataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: orders}
    spec:
      key: order_id
      schema: {order_id: string, amount: decimal, region: string}
    """

private func product(_ name: String, where filter: String = "amount > 1", select: String = "{order_id: order_id, amount: amount}",
                     sink: String? = nil) -> String
{
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: risk}
    spec:
      from: orders
      where: \(filter)
      select: \(select)
      sink: \(sink ?? "{postgres: {url: \"postgres://db/x\", table: \(name.replacingOccurrences(of: "-", with: "_"))}}")
    """
}

/// The documents, validated against a catalog that has the dataset (as the server's would).
private func documents(_ yaml: String...) throws -> [SpecDocument] {
    let catalog = SpecLoader.load([SpecFile(name: "catalog.yaml", content: dataset)]).documents.compactMap { document -> Dataset? in
        if case .dataset(let dataset, _) = document { return dataset }
        return nil
    }
    let result = SpecLoader.load([SpecFile(name: "specs.yaml", content: yaml.joined(separator: "\n---\n"))], catalog: catalog)
    guard result.errors.isEmpty else { throw ApplyRejected(errors: result.errors) }
    return result.documents
}

/// Tables rebuild beside themselves; files do not.
private let planner = ApplyPlanner(rules: OutputRules(
    location: { spec in
        switch spec.sink {
        case .postgres(let postgres): "postgres \(postgres.table)"
        case .file(let file): "file \(file.path)"
        default: "other"
        }
    },
    rebuildsInPlace: { spec in if case .postgres = spec.sink { true } else { false } }))

private let risk = Writer("api:risk"), payments = Writer("api:payments")

private func messages(_ body: () throws -> ApplyPlan) -> [String] {
    do {
        _ = try body()
        return []
    } catch let rejected as ApplyRejected {
        return rejected.errors.map(\.description)
    } catch {
        return ["\(error)"]
    }
}

private func withVersion(_ yaml: String, _ version: String) -> String {
    yaml.replacingOccurrences(of: "metadata: {name: eu, team: risk}", with: "metadata: {name: eu, team: risk, resourceVersion: \"\(version)\"}")
}

@Suite struct ApplyPlannerTests {
    /// Optimistic concurrency: a document that says which version it was read at changes the
    /// object only while it is still at that version; the version is never stored.
    @Test func aDocumentReadAtAnOlderVersionIsAConflict() throws {
        var current = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu")), writer: risk, now: 5).next
        current.products["eu"]?.resourceVersion = 7
        let atSeven = try planner.plan(current: current, documents: documents(withVersion(product("eu", where: "amount > 2"), "7")),
                                       writer: risk, now: 6)
        #expect(atSeven.changes.map(\.action) == [.updateRebuild])
        #expect(atSeven.next.products["eu"]?.product.metadata.resourceVersion == nil)
        do {
            _ = try planner.plan(current: current, documents: documents(withVersion(product("eu", where: "amount > 2"), "6")),
                                 writer: risk, now: 6)
            Issue.record("a stale version was applied")
        } catch let rejected as ApplyRejected {
            #expect(rejected.isConflict)
            #expect(rejected.errors.map(\.path) == ["metadata.resourceVersion"])
            #expect(rejected.errors[0].message.contains("changed since resourceVersion 6 (it is at 7 now)"))
        }
        // The same document at the current version but unchanged is no change.
        let unchanged = try planner.plan(current: current, documents: documents(withVersion(product("eu"), "7")), writer: risk, now: 6)
        #expect(unchanged.changes.map(\.action) == [.unchanged])
        #expect(messages { try planner.plan(current: current, documents: documents(withVersion(product("asia"), "3")), writer: risk, now: 6) }
                .isEmpty)  // only the named object is checked: asia carries no version here
        let missing = withVersion(product("eu"), "3").replacingOccurrences(of: "name: eu", with: "name: gone")
            .replacingOccurrences(of: "table: eu", with: "table: gone")
        #expect(messages { try planner.plan(current: current, documents: documents(missing), writer: risk, now: 6) }
                == ["specs.yaml:1:1: metadata.resourceVersion: product 'gone' does not exist, so it is not at resourceVersion 3"])
    }

    /// A key's partition follows from the count, so a dataset's count is fixed once made;
    /// leaving it out keeps it, and a new topic may have any.
    @Test func aDatasetsPartitionCountCannotChange() throws {
        let six = dataset.replacingOccurrences(of: "key: order_id", with: "key: order_id\n  partitions: 6")
        let current = try planner.plan(current: ControlState(), documents: documents(six), writer: risk, now: 5).next
        #expect(current.datasets["orders"]?.dataset.spec.partitions == 6)
        let three = dataset.replacingOccurrences(of: "key: order_id", with: "key: order_id\n  partitions: 3")
        #expect(messages { try planner.plan(current: current, documents: documents(three), writer: risk, now: 6) } == [
            "specs.yaml:1:1: spec.partitions: topic 'orders' has 6 partitions; its count cannot change (each key's partition follows from it): give the dataset a new topic instead",
        ])
        #expect(try planner.plan(current: current, documents: documents(six), writer: risk, now: 6).changes.map(\.action) == [.unchanged])
        let moved = three.replacingOccurrences(of: "key: order_id", with: "topic: orders-v2\n  key: order_id")
        #expect(try planner.plan(current: current, documents: documents(moved), writer: risk, now: 6).changes.map(\.action) == [.update])
    }

    /// A topic's cleanup policy is set when it is created: a dataset cannot become compacted
    /// (its history would go) or stop being so (what compaction dropped is not coming back).
    @Test func aDatasetsCompactionCannotChange() throws {
        let current = try planner.plan(current: ControlState(), documents: documents(dataset), writer: risk, now: 5).next
        let compacted = dataset.replacingOccurrences(of: "key: order_id", with: "key: order_id\n  compacted: true")
        #expect(messages { try planner.plan(current: current, documents: documents(compacted), writer: risk, now: 6) } == [
            "specs.yaml:1:1: spec.compacted: topic 'orders' was created keeping every record; that cannot change: give the dataset a new topic instead",
        ])
        let moved = compacted.replacingOccurrences(of: "key: order_id", with: "topic: orders-latest\n  key: order_id")
        #expect(try planner.plan(current: current, documents: documents(moved), writer: risk, now: 6).changes.map(\.action) == [.update])
    }

    /// An update names each field it changes, with both values, and whether it rebuilds.
    @Test func anUpdateListsTheFieldsItChanges() throws {
        let current = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu")), writer: risk, now: 5).next
        let plan = try planner.plan(current: current, documents: documents(product("eu", where: "amount > 2")), writer: risk, now: 6)
        let change = try #require(plan.changes.first)
        #expect(change.action == .updateRebuild)
        #expect(change.rebuilds)
        #expect(change.fields == [FieldChange(path: "spec.where", from: "\"amount > 1\"", to: "\"amount > 2\"")])
        let relabelled = product("eu").replacingOccurrences(of: "team: risk}", with: "team: risk, labels: {tier: gold}}")
        let labels = try planner.plan(current: current, documents: documents(relabelled), writer: risk, now: 6)
        #expect(labels.changes.first?.action == .update)
        #expect(labels.changes.first?.rebuilds == false)
        #expect(labels.changes.first?.fields == [FieldChange(path: "metadata.labels", from: nil, to: "{\"tier\":\"gold\"}")])
    }
    /// A new function product signs the Standard Webhooks way unless its spec says; one
    /// stored before signing could be chosen keeps `Provision-Signature` when applied again
    /// from the same YAML, and one that chose keeps its choice.
    @Test func aWebhookWithoutSigningIsStandardWhenNewAndKeepsItsSigningOtherwise() throws {
        let hook = product("fn", sink: "{webhook: {url: \"http://hooks/x\", secret: \"${secret:key}\"}}")
        func signing(_ state: ControlState) -> WebhookSigning?? {
            guard case .webhook(let webhook) = state.products["fn"]?.product.spec.sink else { return nil }
            return .some(webhook.signing)
        }
        let created = try planner.plan(current: ControlState(), documents: documents(dataset, hook), writer: risk, now: 5).next
        #expect(signing(created) == .some(.standard))
        let again = try planner.plan(current: created, documents: documents(hook), writer: risk, now: 6)
        #expect(again.changes.map(\.action) == [.unchanged])

        var legacy = created
        guard case .webhook(var stored) = legacy.products["fn"]!.product.spec.sink else { return }
        stored.signing = nil
        legacy.products["fn"]!.product.spec.sink = .webhook(stored)
        let reapplied = try planner.plan(current: legacy, documents: documents(hook), writer: risk, now: 6)
        #expect(reapplied.changes.map(\.action) == [.unchanged])
        #expect(signing(reapplied.next) == .some(nil), "a product made before signing keeps Provision-Signature")
        let chosen = try planner.plan(current: legacy, documents: documents(hook.replacingOccurrences(of: "secret: ", with: "signing: standard, secret: ")),
                                      writer: risk, now: 6)
        #expect(signing(chosen.next) == .some(.standard))
    }

    @Test func whatAWriterCreatesItManages() throws {
        let plan = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu")), writer: risk, now: 5)
        #expect(plan.changes.map(\.action) == [.create, .create])
        #expect(plan.next.products["eu"]?.manager == risk)
        #expect(plan.next.datasets["orders"]?.manager == risk)
        #expect(plan.next.products["eu"]?.build == 1)
    }

    @Test func anotherWritersChangeIsAConflictUnlessItTakesOver() throws {
        let current = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu")), writer: risk, now: 5).next
        // The same documents are no change, whoever sends them.
        let same = try planner.plan(current: current, documents: documents(dataset, product("eu")), writer: payments, now: 6)
        #expect(same.changes.map(\.action) == [.unchanged, .unchanged])
        let changed = try documents(dataset, product("eu", where: "amount > 2"))
        #expect(messages { try planner.plan(current: current, documents: changed, writer: payments, now: 6) } == [
            "specs.yaml:8:1: metadata.name: product 'eu' is managed by api:risk, not api:payments; apply with --force to take it over",
        ])
        let forced = try planner.plan(current: current, documents: changed, writer: payments, force: true, now: 6)
        #expect(forced.changes.map(\.action) == [.unchanged, .updateRebuild])
        #expect(forced.next.products["eu"]?.manager == payments)
    }

    @Test func pruneDeletesOnlyWhatTheWriterManages() throws {
        var current = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu"), product("us")),
                                       writer: risk, now: 5).next
        current = try planner.plan(current: current, documents: documents(product("apac")), writer: payments, now: 6).next
        let plan = try planner.plan(current: current, documents: documents(dataset, product("eu")), writer: risk, prune: true, now: 7)
        #expect(plan.changes.filter { $0.action == .delete }.map(\.name) == ["us"])
        #expect(plan.next.products["us"]?.deleting == true)
        #expect(plan.next.products["apac"]?.deleting == false)
    }

    @Test func rebuildKindsFollowTheSink() throws {
        let current = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu")), writer: risk, now: 5).next
        let widened = try planner.plan(current: current, documents: documents(product("eu", select: "{order_id: order_id, amount: amount, region: region}")),
                                       writer: risk, now: 6).next.products["eu"]
        #expect(widened?.buildKind == .widening && widened?.build == 2 && widened?.buildStartedAt == 5)
        let replaced = try planner.plan(current: current, documents: documents(product("eu", where: "amount > 9")), writer: risk, now: 6)
            .next.products["eu"]
        #expect(replaced?.buildKind == .replacement && replaced?.buildStartedAt == 6 && replaced?.pendingCleanup == nil)
        let moved = try planner.plan(current: current, documents: documents(product("eu", sink: "{file: {path: eu.jsonl}}")),
                                     writer: risk, now: 6).next.products["eu"]
        #expect(moved?.buildKind == .fresh && moved?.pendingCleanup?.sink == current.products["eu"]?.product.spec.sink)
    }

    @Test func anOutputBelongsToOneProduct() throws {
        let current = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu")), writer: risk, now: 5).next
        let second = product("other", sink: "{postgres: {url: \"postgres://db/x\", table: eu}}")
        #expect(messages { try planner.plan(current: current, documents: documents(second), writer: risk, now: 6) } == [
            "specs.yaml:1:1: spec.sink: postgres eu is already the output of product 'eu'",
        ])
    }

    @Test func aProductAppliedWhileBeingDeletedIsANewBuildThatCleansUpFirst() throws {
        var current = try planner.plan(current: ControlState(), documents: documents(dataset, product("eu")), writer: risk, now: 5).next
        current.products["eu"]?.deleting = true
        let plan = try planner.plan(current: current, documents: documents(product("eu", where: "amount > 3")), writer: risk, now: 6)
        #expect(plan.changes.map(\.action) == [.create])
        #expect(plan.next.products["eu"]?.deleting == false)
        #expect(plan.next.products["eu"]?.build == 2)
        #expect(plan.next.products["eu"]?.pendingCleanup == current.products["eu"]?.product.spec)
    }
}
