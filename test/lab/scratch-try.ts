import { withLab } from './lab';
async function main(): Promise<void> {
  await withLab({ prefix: 'f6try' }, async (lab) => {
    await lab.startServer('vsftpd');
    const l = await lab.runClient({ client: 'tnftp', mode: 'epsv', family: 6, path: 'pub/' });
    console.log(JSON.stringify(l, null, 1));
  });
}
void main();
