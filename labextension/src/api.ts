/**
 * The REST API of the server extension (jupyter_extension/cellpipe_server/handlers.py).
 * Every failure becomes an `ApiError` carrying the server's message and, for compile
 * errors, its problems, so the UI can say where instead of "request failed".
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IProfileList } from './profiles';
import { ISplitPlan } from './split';
import { IRunStatus } from './state';

export const API_BASE = 'cellpipe/api';

/** A compile problem or warning (cellpipe.errors.Diagnostic). */
export interface IDiagnostic {
  code: string;
  message: string;
  severity: 'error' | 'warning' | string;
  cell: number | null;
  cell_id: string | null;
  step: string | null;
  name: string | null;
  line: number | null;
}

export interface IParameter {
  name: string;
  default: unknown;
  expression: string;
  type: string;
}

export interface IEdge {
  source: string;
  target: string;
  kind: 'prev' | 'data' | 'order' | string;
  names: string[];
  cell: number | null;
}

export interface ICompiledStep {
  name: string;
  cells: string[];
  inputs: Record<string, string>;
  outputs: string[];
  after: string[];
  /** The part of a composed notebook the step comes from; null: the main notebook's. */
  group?: string | null;
  /** That part's notebook, relative to the main notebook. */
  notebook?: string | null;
}

export interface ICompiledCell {
  index: number;
  id: string;
  kind: string;
  role: string;
  step: string | null;
}

/** `POST /compile`'s answer (cellpipe.model.Pipeline.to_json). */
export interface IPipeline {
  name: string;
  path: string | null;
  parameters: IParameter[];
  steps: ICompiledStep[];
  edges: IEdge[];
  diagnostics: IDiagnostic[];
  cells: ICompiledCell[];
}

export interface IBackend {
  name: string;
  available: boolean;
  reason: string;
}

export interface IRunList {
  runs: IRunStatus[];
  total: number;
  page: number;
  page_size: number;
}

/** What one cell produced in a step (cellpipe.runner.CellRecord). */
export interface ICellRecord {
  outputs: Record<string, unknown>[];
  execution_count: number | null;
  /** "ok", "error" (this cell raised) or "running" (live snapshot). */
  status: string;
  duration_s: number;
}

/** `GET /runs/{id}/steps/{step}/outputs`: nbformat outputs per original cell id. */
export interface IStepOutputs {
  run: string;
  step: string;
  attempt: number;
  cells: Record<string, ICellRecord>;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly kind: string = '',
    readonly problems: IDiagnostic[] = []
  ) {
    super(message);
  }
}

export class CellpipeApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, API_BASE, ...parts.map(encodeURIComponent));
  }

  private async request<T>(path: string[], init: RequestInit = {}, query = ''): Promise<T> {
    const url = this.url(...path) + query;
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (e) {
      throw new ApiError(`cannot reach the Jupyter server: ${(e as Error).message}`, 0);
    }
    const text = await response.text();
    let body: any = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      if (response.status === 404 && !body?.error) {
        throw new ApiError(
          'cellpipe server extension not found (pip install cellpipe, restart Jupyter)',
          404,
          'NoServerExtension'
        );
      }
      throw new ApiError(
        body?.message ?? `${response.status} ${response.statusText}`,
        response.status,
        body?.error ?? '',
        Array.isArray(body?.problems) ? body.problems : []
      );
    }
    return body as T;
  }

  compile(path: string, content: unknown): Promise<IPipeline> {
    return this.request(['compile'], {
      method: 'POST',
      body: JSON.stringify({ path, content })
    });
  }

  /** The engine's split of the open content at markdown headings (nothing is written). */
  split(path: string, content: unknown, level: number): Promise<ISplitPlan> {
    return this.request(['split'], {
      method: 'POST',
      body: JSON.stringify({ path, content, level })
    });
  }

  createRun(
    path: string,
    content: unknown,
    backend: string,
    parameters: Record<string, unknown>,
    profile: string | null = null
  ): Promise<IRunStatus> {
    // profile: argo's cluster profile ('' none); null lets the server choose its default.
    return this.request(['runs'], {
      method: 'POST',
      body: JSON.stringify({ path, content, backend, parameters, profile })
    });
  }

  listRuns(path: string, pageSize = 20): Promise<IRunList> {
    return this.request(
      ['runs'],
      {},
      `?path=${encodeURIComponent(path)}&page_size=${pageSize}`
    );
  }

  getRun(runId: string): Promise<IRunStatus> {
    return this.request(['runs', runId]);
  }

  outputs(runId: string, step: string): Promise<IStepOutputs> {
    return this.request(['runs', runId, 'steps', step, 'outputs']);
  }

  cancel(runId: string): Promise<IRunStatus> {
    return this.request(['runs', runId, 'cancel'], { method: 'POST', body: '{}' });
  }

  resume(runId: string, content: unknown): Promise<IRunStatus> {
    return this.request(['runs', runId, 'resume'], {
      method: 'POST',
      body: JSON.stringify({ content })
    });
  }

  backends(): Promise<IBackend[]> {
    return this.request(['backends']);
  }

  /** The server's cluster profiles for argo runs. */
  profiles(): Promise<IProfileList> {
    return this.request(['profiles']);
  }

  /** A step's log (stdout and stderr) as plain text. */
  async stepLog(runId: string, step: string): Promise<string> {
    const url = this.url('runs', runId, 'steps', step, 'log');
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, {}, this.settings);
    } catch (e) {
      throw new ApiError(`cannot reach the Jupyter server: ${(e as Error).message}`, 0);
    }
    const text = await response.text();
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = JSON.parse(text).message ?? message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ApiError(message, response.status);
    }
    return text;
  }

  reportUrl(runId: string): string {
    return this.url('runs', runId, 'report');
  }
}
