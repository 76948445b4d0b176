import ProvisionLog
import ProvisionModel
import ProvisionPipeline

/// What the API asks of the control plane.
extension Reconciler {
    /// Validates every file, computes the plan and, unless `dryRun`, applies all of it.
    /// Any error rejects the whole request: nothing is half-applied.
    public func apply(_ request: ApplyRequest) async throws -> ApplyResponse {
        let preview = try plan(request, against: currentState)
        if request.dryRun { return ApplyResponse(dryRun: true, changes: preview.changes) }
        // Topics first: an empty topic is all that a rejected apply leaves behind.
        let created = Set(newTopics(preview))
        for topic in created.sorted() { try await createTopic(topic) }
        var (changes, version) = try await commitVersioned { current in
            // Planned again against the state every earlier commit left: a change committed
            // while the topics were created is kept, not overwritten.
            let planned = try self.plan(request, against: current)
            guard Set(self.newTopics(planned)).isSubset(of: created) else {
                throw ControlStateNotSaved(cause: "a dataset's topic changed while the apply ran; apply again")
            }
            let touched = planned.changes.filter { $0.action != .unchanged }
            var changes = planned.changes
            for index in changes.indices where changes[index].action == .unchanged {
                changes[index].resourceVersion = Self.version(of: changes[index], in: current)
            }
            return (planned.next, touched.filter { $0.kind == .dataset }.map(\.name),
                    touched.filter { $0.kind == .dataProduct }.map(\.name), changes)
        }
        for index in changes.indices where changes[index].action != .unchanged {
            changes[index].resourceVersion = version.map(String.init)
            if changes[index].kind == .dataProduct { requestReconcile(changes[index].name) }
        }
        return ApplyResponse(dryRun: false, changes: changes)
    }

    private static func version(of change: PlannedChange, in state: ControlState) -> String? {
        switch change.kind {
        case .dataset: return state.datasets[change.name].map { String($0.resourceVersion) }
        case .dataProduct: return state.products[change.name].map { String($0.resourceVersion) }
        }
    }

    private nonisolated func newTopics(_ plan: ApplyPlan) -> [String] {
        plan.changes.filter { $0.kind == .dataset && $0.action == .create }.compactMap { plan.next.datasets[$0.name]?.dataset.spec.topic }
    }

    /// The state an apply leads to and the changes that make it, against `state`.
    private func plan(_ request: ApplyRequest, against state: ControlState) throws -> ApplyPlan {
        let result = SpecLoader.load(request.files, catalog: state.datasets.values.map(\.dataset))
        guard result.errors.isEmpty else { throw ApplyRejected(errors: result.errors) }
        return try planner.plan(current: state, documents: result.documents, writer: Writer(request.managedBy ?? "cli"),
                                prune: request.prune, force: request.force ?? false, now: currentTime)
    }

    /// Every change to a dataset, a product or a product's status committed after `version`
    /// (nil: from now on), in order. Throws `WatchExpired` when those changes are no longer
    /// all kept.
    public func watch(from version: ResourceVersion?) async throws -> AsyncThrowingStream<WatchEvent, Error> {
        let start: ResourceVersion
        if let version { start = version } else { start = try await store.snapshot().resourceVersion }
        let events = try await store.watch(from: start)
        return AsyncThrowingStream { continuation in
            let forward = Task {
                do {
                    for try await event in events {
                        let kind: WatchEvent.Kind
                        switch event.key.kind {
                        case .dataset: kind = .dataset
                        case .product: kind = .dataProduct
                        case .productStatus: kind = .productStatus
                        }
                        continuation.yield(WatchEvent(type: event.value == nil ? .deleted : .changed, kind: kind,
                                                      name: event.key.name, resourceVersion: String(event.resourceVersion)))
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in forward.cancel() }
        }
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

    /// The spec of the dataset kept in `topic`, if there is one.
    public func datasetSpec(onTopic topic: String) -> DatasetSpec? {
        currentState.datasets.values.first { $0.dataset.spec.topic == topic }?.dataset.spec
    }

    /// Every product, and the store version the list reflects (a watch from it misses nothing).
    public func listProducts() -> (products: [ProductResource], resourceVersion: ResourceVersion) {
        (products(), committedVersion)
    }

    public func products() -> [ProductResource] {
        currentState.products.values.sorted { $0.product.name < $1.product.name }.map(resource)
    }

    public func product(_ name: String) -> ProductResource? {
        currentState.products[name].map(resource)
    }

    /// Marks the product for deletion and returns at once; the reconciler stops it and
    /// applies its deletion policy. Returns the product's version after the change, or nil
    /// if it does not exist.
    public func deleteProduct(_ name: String) async throws -> ResourceVersion? {
        try await changeProduct(name) { $0.deleting = true }
    }

    /// Stops or restarts a product's pipeline, keeping its output and checkpoint. Returns
    /// the product's version after the change, or nil if it does not exist.
    public func setPaused(_ name: String, _ paused: Bool) async throws -> ResourceVersion? {
        try await changeProduct(name) { $0.paused = paused }
    }

    /// Resumes a product and, with `acceptingLoss`, lets its next run move past records
    /// retention removed before it read them. Returns the product's version after the
    /// change, or nil if it does not exist.
    public func resume(_ name: String, acceptingLoss: Bool) async throws -> ResourceVersion? {
        let version = try await changeProduct(name) { stored in
            stored.paused = false
            if acceptingLoss { stored.acceptsLoss = true }
        }
        // A product stopped by the loss has no pipeline to wake: start it again.
        if version != nil, acceptingLoss { await restartRun(name) }
        return version
    }

    /// Commits a change to a product that is not being deleted and asks for its
    /// reconciliation. Returns the product's version after it (nil: no such product).
    private func changeProduct(_ name: String, _ change: @escaping (inout StoredProduct) -> Void) async throws -> ResourceVersion? {
        let (found, version) = try await commitVersioned { current -> (ControlState, [String], [String], ResourceVersion?) in
            guard var stored = current.products[name], !stored.deleting else { return (current, [], [], nil) }
            change(&stored)
            var next = current
            next.products[name] = stored
            return (next, [], [name], stored.resourceVersion)
        }
        guard let found else { return nil }
        requestReconcile(name)
        return version ?? found  // no version: the change changed nothing
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
                                       creationTimestamp: Timestamp.format(stored.createdAt), managedBy: stored.manager.rawValue,
                                       resourceVersion: String(stored.resourceVersion)),
            spec: stored.dataset.spec, status: DatasetStatus(records: end - start, startOffset: start, endOffset: end))
    }

    private func resource(_ stored: StoredProduct) -> ProductResource {
        var metadata = ResourceMetadata(stored.product.metadata, generation: stored.generation,
                                        creationTimestamp: Timestamp.format(stored.createdAt), managedBy: stored.manager.rawValue,
                                        resourceVersion: String(stored.resourceVersion))
        metadata.deleting = stored.deleting ? true : nil
        return ProductResource(metadata: metadata, spec: stored.product.spec, status: stored.status)
    }
}
