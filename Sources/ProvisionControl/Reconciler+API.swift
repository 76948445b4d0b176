import ProvisionLog
import ProvisionModel
import ProvisionPipeline

/// What the API asks of the control plane.
extension Reconciler {
    /// Validates every file, computes the plan and, unless `dryRun`, applies all of it.
    /// Any error rejects the whole request: nothing is half-applied.
    public func apply(_ request: ApplyRequest) async throws -> ApplyResponse {
        var planned = try plan(request)
        if request.dryRun { return ApplyResponse(dryRun: true, changes: planned.changes) }
        let newTopics = planned.changes.filter { $0.kind == .dataset && $0.action == .create }
            .compactMap { planned.next.datasets[$0.name]?.dataset.spec.topic }
        if !newTopics.isEmpty {
            for topic in newTopics { try await createTopic(topic) }
            // Awaiting the topics let other requests change the state: plan again against
            // the state as it is now, with no suspension between this plan and its save, so
            // no concurrent change is overwritten. (An empty topic is all a rejected apply
            // leaves behind.)
            planned = try plan(request)
        }
        try replaceState(planned.next)
        for change in planned.changes where change.kind == .dataProduct && change.action != .unchanged {
            requestReconcile(change.name)
        }
        return ApplyResponse(dryRun: false, changes: planned.changes)
    }

    /// The state an apply leads to and the changes that make it, against the current state.
    /// Synchronous: nothing else runs between reading the state and returning.
    private func plan(_ request: ApplyRequest) throws -> (next: ControlState, changes: [PlannedChange]) {
        let catalog = currentState.datasets.values.map(\.dataset)
        let result = SpecLoader.load(request.files, catalog: catalog)
        guard result.errors.isEmpty else { throw ApplyRejected(errors: result.errors) }
        let conflicts = outputConflicts(result.documents)
        guard conflicts.isEmpty else { throw ApplyRejected(errors: conflicts) }
        var next = currentState
        var changes: [PlannedChange] = []
        let now = currentTime
        var appliedProducts: Set<String> = []
        for document in result.documents {
            switch document {
            case .dataset(let dataset, _):
                if let existing = next.datasets[dataset.name] {
                    if existing.dataset == dataset {
                        changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .unchanged))
                    } else {
                        next.datasets[dataset.name]?.dataset = dataset
                        next.datasets[dataset.name]?.generation += 1
                        changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .update))
                    }
                } else {
                    next.datasets[dataset.name] = StoredDataset(dataset: dataset, generation: 1, createdAt: now)
                    changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .create))
                }
            case .dataProduct(let product, _):
                appliedProducts.insert(product.name)
                if var existing = next.products[product.name], !existing.deleting {
                    if existing.product == product {
                        changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: .unchanged))
                        continue
                    }
                    let change = existing.product.spec.outputChange(to: product.spec)
                    let rebuild = change != .none
                    if rebuild { beginBuild(of: &existing, as: product.spec, change: change, now: now) }
                    existing.product = product
                    existing.generation += 1
                    next.products[product.name] = existing
                    changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: rebuild ? .updateRebuild : .update,
                                                 detail: rebuild ? rebuildDetail(existing) : nil))
                } else {
                    // A product whose deletion has not finished is created anew: a later build
                    // number retires the old one's pipeline, and its output is cleaned up first.
                    let deleted = next.products[product.name]
                    next.products[product.name] = StoredProduct(product: product, generation: 1, createdAt: now,
                                                                build: (deleted?.build ?? 0) + 1, buildStartedAt: now,
                                                                status: ProductStatus(), deleting: false, paused: false,
                                                                pendingCleanup: deleted.map { $0.pendingCleanup ?? $0.product.spec })
                    changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: .create))
                }
            }
        }
        try rebuildProductsOfChangedDatasets(in: &next, changes: &changes, documents: result.documents, now: now)
        if request.prune {
            for name in next.products.keys.sorted() where !appliedProducts.contains(name) && next.products[name]?.deleting == false {
                next.products[name]?.deleting = true
                changes.append(PlannedChange(kind: .dataProduct, name: name, action: .delete))
            }
        }
        return (next, changes)
    }

    /// A changed dataset changes what its products read: every product on it must still
    /// compile against the new version (or the apply is rejected at the dataset), and its
    /// output is rebuilt.
    private func rebuildProductsOfChangedDatasets(in next: inout ControlState, changes: inout [PlannedChange],
                                                  documents: [SpecDocument], now: TimestampMilliseconds) throws
    {
        var locations: [String: SourceLocation] = [:]
        for case .dataset(let dataset, let location) in documents { locations[dataset.name] = location }
        let changed = Set(changes.filter { $0.kind == .dataset && $0.action == .update }.map(\.name))
        guard !changed.isEmpty else { return }
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
        if !errors.isEmpty { throw ApplyRejected(errors: errors) }
    }

    /// Starts a new build of a product's output. Sinks that can build beside the current
    /// output (or extend it) keep it serving until the new build has caught up; others
    /// remove it first.
    private func beginBuild(of stored: inout StoredProduct, as spec: DataProductSpec, change: OutputChange,
                            now: TimestampMilliseconds)
    {
        let sameOutput = sinkLocation(of: stored.product.spec) == sinkLocation(of: spec)
        if sameOutput, rebuildsInPlace(spec), stored.pendingCleanup == nil {
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

    private func rebuildDetail(_ stored: StoredProduct) -> String {
        switch stored.buildKind ?? .fresh {
        case .fresh: return "the output changes; it is rebuilt from the start of the backfill"
        case .replacement: return "the output changes; a new one is built beside it from the start of the backfill and swapped in when it has caught up"
        case .widening: return "the output gains fields; they are added and filled from the start of the backfill"
        }
    }

    /// Two products writing one output would corrupt each other: each output belongs to one
    /// product, whether it is in this apply or exists already.
    private func outputConflicts(_ documents: [SpecDocument]) -> [SpecError] {
        var owners: [String: String] = [:]
        for stored in currentState.products.values where !stored.deleting {
            owners[sinkLocation(of: stored.product.spec)] = stored.product.name
        }
        var errors: [SpecError] = []
        var claimed: [String: String] = [:]
        for case .dataProduct(let product, let location) in documents {
            let output = sinkLocation(of: product.spec)
            let owner = claimed[output] ?? owners[output]
            if let owner, owner != product.name {
                errors.append(SpecError(file: location.file, line: location.line, column: location.column,
                                        path: "spec.sink", message: "\(output) is already the output of product '\(owner)'"))
            }
            claimed[output] = product.name
        }
        return errors
    }

    /// Per partition of every topic a product reads, the lowest offset some product has not
    /// read yet: retention by age keeps those records. A paused or stalled product holds its
    /// position; a product without a checkpoint yet, and every joined dataset (read from its
    /// beginning on each rebuild), hold the whole topic.
    public func unreadOffsets() -> [TopicPartition: Int64] {
        var unread: [TopicPartition: Int64] = [:]
        func hold(_ partition: TopicPartition, from offset: Int64) {
            unread[partition] = min(unread[partition] ?? offset, offset)
        }
        let state = currentState
        for stored in state.products.values where !stored.deleting {
            let spec = stored.product.spec
            if let topic = state.datasets[spec.from]?.dataset.spec.topic {
                if stored.status.checkpoint.isEmpty {
                    hold(TopicPartition(topic: topic, partition: 0), from: 0)
                }
                for (partition, offset) in stored.status.checkpoint {
                    hold(TopicPartition(topic: topic, partition: Int(partition) ?? 0), from: offset)
                }
            }
            for join in spec.joins {
                if let topic = state.datasets[join.dataset]?.dataset.spec.topic {
                    hold(TopicPartition(topic: topic, partition: 0), from: 0)
                }
            }
        }
        return unread
    }

    public func products() -> [ProductResource] {
        currentState.products.values.sorted { $0.product.name < $1.product.name }.map(resource)
    }

    public func product(_ name: String) -> ProductResource? {
        currentState.products[name].map(resource)
    }

    /// Marks the product for deletion and returns at once; the reconciler stops it and
    /// applies its deletion policy. Returns false if it does not exist.
    public func deleteProduct(_ name: String) throws(ControlStateNotSaved) -> Bool {
        try changeProduct(name) { $0.deleting = true }
    }

    /// Stops or restarts a product's pipeline, keeping its output and checkpoint. Returns
    /// false if it does not exist.
    public func setPaused(_ name: String, _ paused: Bool) throws(ControlStateNotSaved) -> Bool {
        try changeProduct(name) { $0.paused = paused }
    }

    /// Records a change to a product that is not being deleted, saves it and asks for its
    /// reconciliation.
    /// Resumes a product and, with `acceptingLoss`, lets its next run move past records
    /// retention removed before it read them. Returns false if it does not exist.
    public func resume(_ name: String, acceptingLoss: Bool) async throws(ControlStateNotSaved) -> Bool {
        let changed = try changeProduct(name) { stored in
            stored.paused = false
            if acceptingLoss { stored.acceptsLoss = true }
        }
        // A product stopped by the loss has no pipeline to wake: start it again.
        if changed, acceptingLoss { await restartRun(name) }
        return changed
    }

    private func changeProduct(_ name: String, _ change: (inout StoredProduct) -> Void) throws(ControlStateNotSaved) -> Bool {
        guard var stored = currentState.products[name], !stored.deleting else { return false }
        change(&stored)
        var next = currentState
        next.products[name] = stored
        try replaceState(next)
        requestReconcile(name)
        return true
    }

    public func datasets() async throws -> [DatasetResource] {
        var result: [DatasetResource] = []
        for stored in currentState.datasets.values.sorted(by: { $0.dataset.name < $1.dataset.name }) {
            result.append(try await datasetResource(stored))
        }
        return result
    }

    public func dataset(_ name: String) async throws -> DatasetResource? {
        guard let stored = currentState.datasets[name] else { return nil }
        return try await datasetResource(stored)
    }

    private func datasetResource(_ stored: StoredDataset) async throws -> DatasetResource {
        let topic = stored.dataset.spec.topic
        var start: Int64 = 0, end: Int64 = 0
        for partition in 0..<(try await eventLog.partitionCount(of: topic) ?? 0) {
            let source = TopicPartition(topic: topic, partition: partition)
            start += try await eventLog.startOffset(of: source)
            end += try await eventLog.endOffset(of: source)
        }
        return DatasetResource(
            metadata: ResourceMetadata(stored.dataset.metadata, generation: stored.generation,
                                       creationTimestamp: Timestamp.format(stored.createdAt)),
            spec: stored.dataset.spec, status: DatasetStatus(records: end - start, startOffset: start, endOffset: end))
    }

    private func resource(_ stored: StoredProduct) -> ProductResource {
        ProductResource(
            metadata: ResourceMetadata(stored.product.metadata, generation: stored.generation,
                                       creationTimestamp: Timestamp.format(stored.createdAt)),
            spec: stored.product.spec, status: stored.status)
    }
}
