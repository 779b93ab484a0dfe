// A Map that reports every change of an entry (key, old value, new value) to a callback: the
// engine's bookkeeping of what a command touched, so the invariants can check only that
// (properties/touched.ts). No KVM rule lives here.
export class RecordingMap<K, V> extends Map<K, V> {
  constructor(private readonly onChange: (key: K, old: V | undefined, now: V | undefined) => void) {
    super();
  }

  override set(key: K, value: V): this {
    // Map's constructor calls set() before onChange is assigned; the map starts empty, so no call.
    this.onChange?.(key, super.get(key), value);
    return super.set(key, value);
  }

  override delete(key: K): boolean {
    if (!super.has(key)) return false;
    this.onChange(key, super.get(key), undefined);
    return super.delete(key);
  }

  override clear(): void {
    for (const [key, value] of this) this.onChange(key, value, undefined);
    super.clear();
  }
}
