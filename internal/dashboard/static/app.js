// app: EventSource
