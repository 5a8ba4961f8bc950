/**
 * The requester's search_path, as recorded in the request, turned into the schemas PostgreSQL
 * would search for an unqualified table name: pg_catalog first unless listed, `$user` replaced
 * by the requesting role. (The requester's own temp schema is not searched: temp tables are not
 * guarded.)
 */
export function searchPathSchemas(searchPath: string | null | undefined, requester: string): string[] {
  const schemas: string[] = [];
  for (const raw of splitList(searchPath ?? '"$user", public')) {
    const item = raw.trim();
    if (item === '') continue;
    if (item.startsWith('"')) {
      const name = item.slice(1, -1).replace(/""/g, '"');
      schemas.push(name === '$user' ? requester : name);
    } else {
      const name = item.toLowerCase();
      schemas.push(name === '$user' ? requester : name);
    }
  }
  if (!schemas.includes('pg_catalog')) schemas.unshift('pg_catalog');
  return schemas;
}

/** Split on commas outside double quotes. */
function splitList(value: string): string[] {
  const items: string[] = [];
  let current = '';
  let quoted = false;
  for (const char of value) {
    if (char === '"') quoted = !quoted;
    if (char === ',' && !quoted) {
      items.push(current);
      current = '';
    } else {
      current += char;
    }
  }
  items.push(current);
  return items;
}
