import ProvisionModel
import ProvisionPipeline

/// Who makes a change, as recorded on every object it creates (`managedBy`): `cli`,
/// `api:<team>`, `gitops:<source>`. A writer changes and prunes only what it manages.
public struct Writer: Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String

    public init(_ rawValue: String) {
        self.rawValue = rawValue
    }

    public static let cli = Writer("cli")

    public var description: String { rawValue }

    public init(from decoder: Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// What the planner must know about outputs, as pure functions of a spec (the sink
/// factory's rules, without its I/O).
public struct OutputRules: Sendable {
    /// Where a spec's output is, comparable between specs (no secrets).
    public var location: @Sendable (DataProductSpec) -> String
    /// Whether the sink can build a new output beside the served one (a table, an index).
    public var rebuildsInPlace: @Sendable (DataProductSpec) -> Bool

    public init(location: @escaping @Sendable (DataProductSpec) -> String,
                rebuildsInPlace: @escaping @Sendable (DataProductSpec) -> Bool)
    {
        self.location = location
        self.rebuildsInPlace = rebuildsInPlace
    }
}

/// The state an apply leads to, and the changes that make it.
public struct ApplyPlan: Sendable {
    public var next: ControlState
    public var changes: [PlannedChange]
    /// For a git source: the documents it left out because another writer manages their
    /// objects (the rest is applied).
    public var conflicts: [SpecError] = []
    /// For a git source: objects changed outside git since it applied them, reverted or
    /// (`driftPolicy: detect`) left as they are.
    public var drift: [DriftReport] = []
    /// For a git source: products it no longer lists but keeps (`provision/prune: disabled`).
    public var keptFromPrune: [String] = []
    /// For the person applying: what they should know (a change a git source will revert).
    public var warnings: [String] = []
}

extension Writer {
    /// The git source this writer is, if it is one (`gitops:<source>`).
    public var gitSource: String? { rawValue.hasPrefix("gitops:") ? String(rawValue.dropFirst("gitops:".count)) : nil }
}

/// Plans an apply: `(current state, submitted documents, writer) → changes`, with no I/O,
/// so that it is tested without a server and the reconciler only executes what it returns.
public struct ApplyPlanner: Sendable {
    public var rules: OutputRules

    public init(rules: OutputRules) {
        self.rules = rules
    }

    /// - Parameters:
    ///   - documents: validated documents (`SpecLoader` found no error in them).
    ///   - prune: products the writer manages and the documents omit are deleted; no other.
    ///   - force: the writer takes over objects another writer manages instead of being refused.
    ///
    /// An object a git source manages may be changed by another writer: the change is made,
    /// the source keeps the object, and the next sync reverts it (or, with `driftPolicy:
    /// detect`, reports it). A git source itself never takes over another writer's object:
    /// that document is left out and reported as a conflict, and the rest of its revision applies.
    /// A webhook spec that does not say how to sign: a new product signs the Standard
    /// Webhooks way; an existing one keeps the signing its receivers verify.
    static func defaultWebhookSigning(of product: inout DataProduct, existing: DataProduct?) {
        guard case .webhook(var webhook) = product.spec.sink, webhook.signing == nil else { return }
        if let existing, case .webhook(let stored) = existing.spec.sink {
            webhook.signing = stored.signing
        } else {
            webhook.signing = .standard
        }
        product.spec.sink = .webhook(webhook)
    }

    public func plan(current: ControlState, documents: [SpecDocument], writer: Writer, prune: Bool = false,
                     force: Bool = false, now: TimestampMilliseconds) throws(ApplyRejected) -> ApplyPlan
    {
        var errors = outputConflicts(documents, in: current)
        var ownershipConflicts = 0  // ownership and version conflicts: a 409, not a 422
        var plan = ApplyPlan(next: current, changes: [])
        var appliedProducts: Set<String> = []
        let syncingSource = writer.gitSource.flatMap { current.gitSources[$0] }
        let detectsDrift = syncingSource?.source.spec.driftPolicy == .detect

        /// Whether `writer` may change an object `manager` manages; records why not, or the
        /// warning a change to a git source's object gets.
        func mayChange(kind: String, name: String, managedBy manager: Writer, location: SourceLocation) -> Bool {
            guard manager != writer, !force else { return true }
            if writer.gitSource != nil {
                plan.conflicts.append(SpecError(file: location.file, line: location.line, column: location.column, path: "metadata.name",
                                                message: "\(kind) '\(name)' is managed by \(manager), not by this source; it is left as it is"))
                return false
            }
            if let source = manager.gitSource {
                let policy = current.gitSources[source]?.source.spec.driftPolicy ?? .revert
                plan.warnings.append(policy == .revert
                    ? "\(kind) '\(name)' is managed by git source '\(source)': its next sync puts back what git says"
                    : "\(kind) '\(name)' is managed by git source '\(source)': the change is reported as drift until git says the same")
                return true
            }
            errors.append(SpecError(file: location.file, line: location.line, column: location.column, path: "metadata.name",
                                    message: "\(kind) '\(name)' is managed by \(manager), not \(writer); apply with --force to take it over"))
            ownershipConflicts += 1
            return false
        }

        /// For a git source's document of an object someone else changed since the source
        /// applied it: whether to apply the document (revert) or leave the change (detect).
        func revertsDrift(kind: SpecKind, name: String, changedBy: Writer?, fields: [FieldChange]) -> Bool {
            guard writer.gitSource != nil, let changedBy, changedBy != writer else { return true }
            plan.drift.append(DriftReport(kind: kind, name: name, changedBy: changedBy.rawValue, fields: fields, reverted: !detectsDrift))
            return !detectsDrift
        }

        for document in documents {
            switch document {
            case .gitSource(var source, let location):
                let expected = source.metadata.resourceVersion
                source.metadata.resourceVersion = nil
                if writer.gitSource != nil {
                    errors.append(SpecError(file: location.file, line: location.line, column: location.column, path: "kind",
                                            message: "a git source's revision cannot define git sources; apply GitSource '\(source.name)' to the server"))
                    continue
                }
                if let refusal = versionConflict(kind: "git source", name: source.name, expected: expected,
                                                 found: plan.next.gitSources[source.name]?.resourceVersion, location: location)
                {
                    errors.append(refusal)
                    ownershipConflicts += 1
                    continue
                }
                guard let existing = plan.next.gitSources[source.name] else {
                    plan.next.gitSources[source.name] = StoredGitSource(source: source, generation: 1, createdAt: now, managedBy: writer)
                    plan.changes.append(PlannedChange(kind: .gitSource, name: source.name, action: .create))
                    continue
                }
                if existing.source == source {
                    plan.changes.append(PlannedChange(kind: .gitSource, name: source.name, action: .unchanged))
                    continue
                }
                guard mayChange(kind: "git source", name: source.name, managedBy: existing.manager, location: location) else { continue }
                plan.next.gitSources[source.name]?.source = source
                plan.next.gitSources[source.name]?.generation += 1
                plan.changes.append(PlannedChange(kind: .gitSource, name: source.name, action: .update,
                                                  fields: FieldDiff.changes(from: existing.source, to: source)))
            case .dataset(var dataset, let location):
                let expected = dataset.metadata.resourceVersion
                dataset.metadata.resourceVersion = nil
                if let refusal = versionConflict(kind: "dataset", name: dataset.name, expected: expected,
                                                 found: plan.next.datasets[dataset.name]?.resourceVersion, location: location)
                {
                    errors.append(refusal)
                    ownershipConflicts += 1
                    continue
                }
                guard let existing = plan.next.datasets[dataset.name] else {
                    var created = StoredDataset(dataset: dataset, generation: 1, createdAt: now, managedBy: writer)
                    created.changedBy = writer
                    plan.next.datasets[dataset.name] = created
                    plan.changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .create))
                    continue
                }
                if existing.dataset == dataset {
                    plan.changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .unchanged))
                    continue
                }
                guard mayChange(kind: "dataset", name: dataset.name, managedBy: existing.manager, location: location) else { continue }
                if dataset.spec.topic == existing.dataset.spec.topic, let wanted = dataset.spec.partitions,
                   wanted != existing.dataset.spec.partitions ?? 1
                {
                    // A key's partition follows from the count: another count would put a key's
                    // new records in another partition than its history, and break its order.
                    errors.append(SpecError(file: location.file, line: location.line, column: location.column, path: "spec.partitions",
                                            message: "topic '\(dataset.spec.topic)' has \(existing.dataset.spec.partitions ?? 1) partition\(existing.dataset.spec.partitions ?? 1 == 1 ? "" : "s"); its count cannot change (each key's partition follows from it): give the dataset a new topic instead"))
                    continue
                }
                if dataset.spec.topic == existing.dataset.spec.topic, dataset.spec.isCompacted != existing.dataset.spec.isCompacted {
                    // The topic was created with its policy: compacting it now would drop the
                    // history products already joined, and a compacted topic never gets it back.
                    errors.append(SpecError(file: location.file, line: location.line, column: location.column, path: "spec.compacted",
                                            message: "topic '\(dataset.spec.topic)' was created \(existing.dataset.spec.isCompacted ? "compacted" : "keeping every record"); that cannot change: give the dataset a new topic instead"))
                    continue
                }
                let fields = FieldDiff.changes(from: existing.dataset, to: dataset)
                guard revertsDrift(kind: .dataset, name: dataset.name, changedBy: existing.changedBy, fields: fields) else {
                    plan.changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .unchanged,
                                                      detail: "changed by \(existing.changedBy!) outside git; left as it is (driftPolicy: detect)"))
                    continue
                }
                plan.next.datasets[dataset.name]?.dataset = dataset
                plan.next.datasets[dataset.name]?.generation += 1
                plan.next.datasets[dataset.name]?.managedBy = force ? writer : existing.manager
                plan.next.datasets[dataset.name]?.changedBy = writer
                plan.changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .update, fields: fields))
            case .dataProduct(var product, let location):
                appliedProducts.insert(product.name)
                let expected = product.metadata.resourceVersion
                product.metadata.resourceVersion = nil
                let live = plan.next.products[product.name].flatMap { $0.deleting ? nil : $0 }
                if let refusal = versionConflict(kind: "product", name: product.name, expected: expected,
                                                 found: live?.resourceVersion, location: location)
                {
                    errors.append(refusal)
                    ownershipConflicts += 1
                    continue
                }
                Self.defaultWebhookSigning(of: &product, existing: live?.product)
                if var existing = live {
                    if existing.product == product {
                        plan.changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: .unchanged))
                        continue
                    }
                    guard mayChange(kind: "product", name: product.name, managedBy: existing.manager, location: location) else { continue }
                    let fields = FieldDiff.changes(from: existing.product, to: product)
                    guard revertsDrift(kind: .dataProduct, name: product.name, changedBy: existing.changedBy, fields: fields) else {
                        plan.changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: .unchanged,
                                                          detail: "changed by \(existing.changedBy!) outside git; left as it is (driftPolicy: detect)"))
                        continue
                    }
                    let change = existing.product.spec.outputChange(to: product.spec)
                    let rebuild = change != .none
                    if rebuild { beginBuild(of: &existing, as: product.spec, change: change, now: now) }
                    existing.product = product
                    existing.generation += 1
                    existing.managedBy = force ? writer : existing.manager
                    existing.changedBy = writer
                    plan.next.products[product.name] = existing
                    plan.changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: rebuild ? .updateRebuild : .update,
                                                      detail: rebuild ? Self.rebuildDetail(existing) : nil, fields: fields))
                } else {
                    // A product whose deletion has not finished is created anew: a later build
                    // number retires the old one's pipeline, and its output is cleaned up first.
                    let deleted = plan.next.products[product.name]
                    var created = StoredProduct(product: product, generation: 1, createdAt: now, build: (deleted?.build ?? 0) + 1,
                                                buildStartedAt: now, status: ProductStatus(), deleting: false, paused: false,
                                                pendingCleanup: deleted.map { $0.pendingCleanup ?? $0.product.spec })
                    created.managedBy = writer
                    created.changedBy = writer
                    plan.next.products[product.name] = created
                    plan.changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: .create))
                }
            }
        }
        // Through copies: `plan` is captured by the functions above, so two of its fields
        // passed inout at once would be overlapping accesses to it.
        var (next, changes) = (plan.next, plan.changes)
        errors += rebuildProductsOfChangedDatasets(from: current, in: &next, changes: &changes, documents: documents, now: now)
        (plan.next, plan.changes) = (next, changes)
        if prune {
            // Only what this writer manages: another team's or source's products are not its to delete.
            for name in plan.next.products.keys.sorted() where !appliedProducts.contains(name) {
                guard let stored = plan.next.products[name], !stored.deleting, stored.manager == writer else { continue }
                guard stored.product.metadata.prunes else {
                    plan.keptFromPrune.append(name)
                    continue
                }
                plan.next.products[name]?.deleting = true
                plan.changes.append(PlannedChange(kind: .dataProduct, name: name, action: .delete))
            }
        }
        guard errors.isEmpty else {
            throw ApplyRejected(errors: errors.sorted { ($0.file, $0.line, $0.column) < ($1.file, $1.line, $1.column) },
                                isConflict: ownershipConflicts == errors.count)
        }
        return plan
    }

    /// A document that names the version it was read at changes the object only if it is
    /// still at that version (Kubernetes' optimistic concurrency).
    private func versionConflict(kind: String, name: String, expected: String?, found: ResourceVersion?,
                                 location: SourceLocation) -> SpecError?
    {
        guard let expected, expected != found.map(String.init) else { return nil }
        let message = found.map { "\(kind) '\(name)' was changed since resourceVersion \(expected) (it is at \($0) now); read it again and reapply" }
            ?? "\(kind) '\(name)' does not exist, so it is not at resourceVersion \(expected)"
        return SpecError(file: location.file, line: location.line, column: location.column, path: "metadata.resourceVersion",
                         message: message)
    }

    /// A dataset whose records change shape (topic, key, time or schema) changes what its
    /// products read: every product on it must still compile against the new version (or the
    /// apply is rejected at the dataset), and its output is rebuilt. Its description, owner or
    /// `pii` marks change nothing a product writes.
    private func rebuildProductsOfChangedDatasets(from current: ControlState, in next: inout ControlState,
                                                  changes: inout [PlannedChange], documents: [SpecDocument],
                                                  now: TimestampMilliseconds) -> [SpecError]
    {
        var locations: [String: SourceLocation] = [:]
        for case .dataset(let dataset, let location) in documents { locations[dataset.name] = location }
        let changed = Set(changes.filter { change in
            change.kind == .dataset && change.action == .update
                && current.datasets[change.name]?.dataset.spec.recordShape != next.datasets[change.name]?.dataset.spec.recordShape
        }.map(\.name))
        guard !changed.isEmpty else { return [] }
        let datasets = next.datasets.mapValues(\.dataset)
        var errors: [SpecError] = []
        for name in next.products.keys.sorted() {
            guard var stored = next.products[name], !stored.deleting, changed.contains(stored.product.spec.from) else { continue }
            let dataset = stored.product.spec.from
            do {
                _ = try ProductPlan.compile(stored.product, datasets: datasets)
            } catch {
                let location = locations[dataset] ?? SourceLocation(file: "?", line: 1, column: 1)
                errors.append(SpecError(file: location.file, line: location.line, column: location.column, path: "spec",
                                        message: "this change to dataset '\(dataset)' breaks product '\(name)': \(error.summary)"))
                continue
            }
            let index = changes.firstIndex { $0.kind == .dataProduct && $0.name == name }
            if let index, [.create, .updateRebuild].contains(changes[index].action) { continue }
            beginBuild(of: &stored, as: stored.product.spec, change: .rebuild, now: now)
            next.products[name] = stored
            let change = PlannedChange(kind: .dataProduct, name: name, action: .updateRebuild,
                                       detail: "dataset '\(dataset)' changed; the output is rebuilt from the start of the backfill")
            if let index { changes[index] = change } else { changes.append(change) }
        }
        return errors
    }

    /// Starts a new build of a product's output. Sinks that can build beside the current
    /// output (or extend it) keep it serving until the new build has caught up; others
    /// remove it first.
    private func beginBuild(of stored: inout StoredProduct, as spec: DataProductSpec, change: OutputChange,
                            now: TimestampMilliseconds)
    {
        let sameOutput = rules.location(stored.product.spec) == rules.location(spec)
        if sameOutput, rules.rebuildsInPlace(spec), stored.pendingCleanup == nil {
            stored.buildKind = change == .addsFields ? .widening : .replacement
        } else {
            stored.pendingCleanup = stored.pendingCleanup ?? stored.product.spec
            stored.buildKind = .fresh
        }
        // An extension refills the rows already there, so its window must not move.
        if stored.buildKind != .widening { stored.buildStartedAt = now }
        stored.build += 1
        stored.status = ProductStatus(observedGeneration: stored.status.observedGeneration)
    }

    static func rebuildDetail(_ stored: StoredProduct) -> String {
        switch stored.buildKind ?? .fresh {
        case .fresh: return "the output changes; it is rebuilt from the start of the backfill"
        case .replacement: return "the output changes; a new one is built beside it from the start of the backfill and swapped in when it has caught up"
        case .widening: return "the output gains fields; they are added and filled from the start of the backfill"
        }
    }

    /// Two products writing one output would corrupt each other: each output belongs to one
    /// product, whether it is in this apply or exists already.
    private func outputConflicts(_ documents: [SpecDocument], in current: ControlState) -> [SpecError] {
        var owners: [String: String] = [:]
        for stored in current.products.values where !stored.deleting {
            owners[rules.location(stored.product.spec)] = stored.product.name
        }
        var errors: [SpecError] = []
        var claimed: [String: String] = [:]
        for case .dataProduct(let product, let location) in documents {
            let output = rules.location(product.spec)
            let owner = claimed[output] ?? owners[output]
            if let owner, owner != product.name {
                errors.append(SpecError(file: location.file, line: location.line, column: location.column,
                                        path: "spec.sink", message: "\(output) is already the output of product '\(owner)'"))
            }
            claimed[output] = product.name
        }
        return errors
    }
}
